"""`dmarclens fetch` SIGKILLed at seeded random points of a 500-report mailbox, and the
IMAP server itself killed and restarted under it, re-run after each fault: the
end state must equal a clean run's (same reports, none doubled) and every
message must sit in the archive or the invalid folder, none left or lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from dmarclens.generator import many_small_reports
from tests.faults.harness import KillLog, facts, kill, rng, run_clean, start
from tests.hostile.cases import meta
from tests.hostile.helpers import clean_env
from tests.imap.helpers import ARCHIVE, INVALID, JUNK_MAIL, count, fetch_args
from tests.servers.dovecot import Dovecot
from tests.servers.plugin import ImapAccount

SEED = 4242
KILLS = 20
SERVER_RESTARTS = 3
REPORTS = 500
JUNK = 5


def mailbox_messages() -> list[bytes]:
    """500 one-report mails (the generator's small reports as attachments) and 5 junk mails."""
    from dmarclens.generator import Attachment, report_email

    types = {"zip": "application/zip", "gz": "application/gzip", "xml": "text/xml"}
    out = []
    for i, (name, data) in enumerate(many_small_reports(REPORTS, seed=9)):
        att = Attachment(name, data, types[name.rsplit(".", 1)[-1]])
        out.append(report_email([att], meta(f"k{i}")))
        if i % 100 == 50:
            out.append(JUNK_MAIL.replace(b"<junk-1@", f"<junk-{i}@".encode()))
    return out


def fill(account: ImapAccount, messages: list[bytes]) -> None:
    with account.server.session(account.user) as c:
        for m in messages:
            c.append("INBOX", m)


def test_fetch_killed_and_server_restarted_at_random_points_ends_exactly_like_a_clean_run(
    dovecot_factory: Callable[..., Dovecot], tmp_path: Path
) -> None:
    server = dovecot_factory(oauth2=False)
    messages = mailbox_messages()
    clean_acct = ImapAccount(server, *server.new_user("clean"))
    acct = ImapAccount(server, *server.new_user("faulted"))
    fill(clean_acct, messages)
    fill(acct, messages)

    def env(a: ImapAccount) -> dict[str, str]:
        return clean_env({"DMARCLENS_IMAP_PASSWORD": a.password, "DMARCLENS_IMAP_MAX_BACKOFF": "1"})

    clean_db = tmp_path / "clean.duckdb"
    rc, seconds, err = run_clean(fetch_args(clean_acct, clean_db, "--batch-size", "25"), cwd=tmp_path,
                                 env=env(clean_acct))
    assert rc == 3, err  # the junk mail is rejected
    expected = facts(clean_db)
    assert len(expected["reports"]) == REPORTS  # type: ignore[arg-type]
    assert (count(clean_acct, ARCHIVE), count(clean_acct, INVALID)) == (REPORTS, JUNK)

    db = tmp_path / "faulted.duckdb"
    args = fetch_args(acct, db, "--batch-size", "10")
    log = KillLog()
    r = rng(SEED)
    restart_at = set(r.sample(range(KILLS), SERVER_RESTARTS))
    moved: list[int] = []  # messages out of INBOX when each fault struck: where in the mailbox it was

    def out_of_inbox() -> int:
        return count(acct, ARCHIVE) + count(acct, INVALID)

    for i in range(KILLS):
        # Strike after 0 or 1 more batches got through, at a random moment inside the next one:
        # before its commit, between commit and move, or during the move.
        proc = start(args, cwd=tmp_path, env=env(acct))
        t0 = time.monotonic()
        # Spread the faults over the whole mailbox whatever the machine's speed: aim each
        # strike a random share of the way to an even split of what is left.
        left = REPORTS + JUNK - out_of_inbox()
        target = out_of_inbox() + r.randint(0, max(1, left // (KILLS - i + 2)))
        while proc.poll() is None and out_of_inbox() < target and time.monotonic() - t0 < 60:
            time.sleep(0.02)
        time.sleep(r.uniform(0, 0.05))
        if i in restart_at:
            # The server dies mid-batch and comes back; the run reconnects and goes on.
            server.kill()
            server.start()
            log.other_faults.append(f"server killed and restarted {time.monotonic() - t0:.2f} s into run {i}")
            time.sleep(r.uniform(0.2, 0.6))
        if proc.poll() is None:
            kill(proc)
            log.kills.append(round(time.monotonic() - t0, 2))
        else:
            _, err = proc.communicate()
            assert b"Traceback" not in err, err.decode(errors="replace")
            log.completed_runs += 1
        moved.append(out_of_inbox())
    rc, _, err = run_clean(args, cwd=tmp_path, env=env(acct))
    assert rc in (0, 3) and "Traceback" not in err, err

    assert facts(db) == expected
    assert count(acct, "INBOX") == 0
    assert (count(acct, ARCHIVE), count(acct, INVALID)) == (REPORTS, JUNK)
    assert len(log.kills) >= KILLS - SERVER_RESTARTS and len(log.kills) + len(log.other_faults) >= KILLS
    # the kills struck all along the mailbox, not only at its start or after it was drained
    assert len(set(moved)) >= KILLS // 2 and min(moved) < REPORTS // 4 and max(moved) > REPORTS // 2
    print(f"\nfetch: {len(log.kills)} SIGKILLs at {sorted(log.kills)} s, {len(log.other_faults)} server restarts; "
          f"messages moved when each kill struck: {moved}; clean run {seconds:.1f} s")
