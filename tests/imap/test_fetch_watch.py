"""`dmarclens fetch --watch`: IMAP IDLE, renewal, reconnect with capped backoff, clean stop on SIGTERM.

Waits here are bounded liveness checks with generous limits, not speed assertions; the
arrival-to-stored latency is measured in benchmarks/imap.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.imap.helpers import (
    ARCHIVE,
    cli_env,
    count,
    fill_simple,
    query,
    simple_report_mail,
    start_fetch,
    stderr_of,
    stored_report_ids,
    wait_for,
)
from tests.servers.dovecot import CAPABILITIES_WITHOUT_MOVE, Dovecot
from tests.servers.plugin import ImapAccount


def _stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return stderr_of(proc)


def test_watch_ingests_mail_appended_while_idling_and_exits_0_on_sigterm(
    imap_account: ImapAccount, tmp_path: Path
) -> None:
    fill_simple(imap_account, 2)
    db = tmp_path / "r.duckdb"
    # IDLE renewed every second: several renewals happen while the test waits.
    proc = start_fetch(imap_account, db, "--watch", env={"DMARCLENS_IMAP_IDLE_RENEW": "1"})
    try:
        wait_for(lambda: count(imap_account, ARCHIVE) == 2, 30, "the mail already there to be archived")
        imap_account.server.append(imap_account.user, "INBOX", simple_report_mail(2))
        wait_for(lambda: count(imap_account, ARCHIVE) == 3, 15, "the appended message to be ingested via IDLE")
        # Traffic classes come after every wake-up that stored something, not when the watch ends.
        wait_for(lambda: _unclassified(db) == 0, 15, "the watcher to classify what it stored")
        imap_account.server.append(imap_account.user, "INBOX", b"Subject: spam\r\n\r\nbuy now\r\n")
        wait_for(lambda: count(imap_account, "DMARC/Invalid") == 1, 15, "junk to reach the invalid folder")
    finally:
        err = _stop(proc)

    assert proc.returncode == 0, err
    assert "SIGTERM received: finishing the message in hand" in err
    assert "1 message(s): 1 report(s) stored, 0 duplicate(s), 0 rejected; 1 archived, 0 invalid" in err
    assert "Traceback" not in err
    assert stored_report_ids(db) == ["r0", "r1", "r2"]
    assert count(imap_account, "INBOX") == 0
    # One ingest run per wake-up that found mail, each finished.
    assert query(db, "SELECT count(*), count(finished_at), sum(stored) FROM ingest_runs") == [(3, 3, 3)]


def test_watch_reconnects_with_capped_backoff_when_the_server_goes_away(
    dovecot_factory: Callable[..., Dovecot], tmp_path: Path
) -> None:
    server = dovecot_factory(oauth2=False)
    user, password = server.new_user("watcher")
    acct = ImapAccount(server, user, password)
    db = tmp_path / "r.duckdb"
    proc = start_fetch(acct, db, "--watch", env={"DMARCLENS_IMAP_MAX_BACKOFF": "2"})
    try:
        server.append(user, "INBOX", simple_report_mail(0))
        wait_for(lambda: count(acct, ARCHIVE) == 1, 30, "the first message to be archived")

        server.kill()
        wait_for(lambda: "reconnecting in 2s (attempt 3)" in stderr_of(proc), 30, "three reconnect attempts")
        server.start()
        wait_for(lambda: "reconnected after" in stderr_of(proc), 30, "the watcher to reconnect")
        server.append(user, "INBOX", simple_report_mail(1))
        wait_for(lambda: count(acct, ARCHIVE) == 2, 15, "mail after the reconnect to be ingested")
    finally:
        err = _stop(proc, signal.SIGINT)

    assert proc.returncode == 0, err
    attempts = [ln for ln in err.splitlines() if "reconnecting in" in ln]
    # Every attempt is logged, names the mailbox, and the wait doubles up to the cap.
    assert [ln.split("reconnecting in ")[1] for ln in attempts[:3]] == [
        "1s (attempt 1)", "2s (attempt 2)", "2s (attempt 3)"]
    assert all(f"{user}@127.0.0.1:{acct.port}" in ln for ln in attempts)
    assert stored_report_ids(db) == ["r0", "r1"]


def test_watch_polls_a_server_without_idle_and_watches_two_mailboxes(
    dovecot_factory: Callable[..., Dovecot], tmp_path: Path
) -> None:
    server = dovecot_factory(oauth2=False, capabilities=CAPABILITIES_WITHOUT_MOVE.replace(" IDLE", ""))
    users = [server.new_user(f"poll{i}") for i in range(2)]
    pw_files = []
    for i, (_user, pw) in enumerate(users):
        pw_files.append(tmp_path / f"pw{i}")
        pw_files[-1].write_text(pw)
    db = tmp_path / "r.duckdb"
    cfg = tmp_path / "dmarclens.toml"
    cfg.write_text(
        f'db = "{db}"\n[imap]\nhost = "127.0.0.1"\nport = {server.imap_port}\ntls = "starttls"\n'
        f'ca_file = "{server.ca_file}"\npoll_interval = 0.5\n'
        + "".join(f'[[mailboxes]]\nuser = "{u}"\npassword_file = "{f}"\n' for (u, _), f in zip(users, pw_files,
                                                                                                  strict=True))
    )
    err_path = tmp_path / "watch.stderr"
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "dmarclens", "fetch", "--config", str(cfg), "--watch"],
                                env=cli_env(None), stdout=subprocess.PIPE, stderr=err_file, text=True)
    proc.stderr_path = err_path  # type: ignore[attr-defined]
    try:
        for i, (user, _) in enumerate(users):
            server.append(user, "INBOX", simple_report_mail(i))
        accounts = [ImapAccount(server, u, p) for u, p in users]
        wait_for(lambda: all(count(a, ARCHIVE) == 1 for a in accounts), 30, "both mailboxes to be drained by polling")
    finally:
        err = _stop(proc)

    assert proc.returncode == 0, err
    assert stored_report_ids(db) == ["r0", "r1"]
    assert all(server.list_folder(u, "INBOX") == [] for u, _ in users)


def _unclassified(db: Path) -> int | None:
    """Stored records without a traffic class; None while the watcher holds the file."""
    import duckdb

    try:
        return query(db, "SELECT count(*) FROM records WHERE traffic_class IS NULL")[0][0]
    except duckdb.Error:
        return None
