"""Exactly once under faults: the fetch process or the IMAP server dies at a chosen point, and the
totals after a re-run equal a clean run's: no report missing, none doubled, no message left behind.

The points are chosen with ``DMARCLENS_FAILPOINT`` (see dmarclens/ingest/mailbox.py): ``kill`` SIGKILLs the
fetch process right there; ``stop`` freezes it (SIGSTOP) so the test can kill or rewire the server
and then let it continue (SIGCONT).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests.imap.helpers import (
    ARCHIVE,
    count,
    fill_simple,
    query,
    resume,
    run_fetch,
    start_fetch,
    stderr_of,
    stored_report_ids,
    wait_stopped,
)
from tests.servers.dovecot import Dovecot
from tests.servers.plugin import ImapAccount

ALL_NINE = [f"r{i}" for i in range(9)]


def _assert_exact(db: Path, account: ImapAccount, report_ids: list[str], folder: str = "INBOX") -> None:
    assert stored_report_ids(db) == report_ids  # each once: report_key is the primary key, and the list matches
    assert query(db, "SELECT sum(message_count) FROM reports") == [(127 * len(report_ids),)]
    assert count(account, folder) == 0
    assert count(account, ARCHIVE) == len(report_ids)


def _private_account(dovecot_factory: Callable[..., Dovecot]) -> ImapAccount:
    server = dovecot_factory(oauth2=False)
    user, password = server.new_user("faults")
    return ImapAccount(server, user, password)


def test_killed_after_commit_before_move_next_run_moves_without_counting_twice(
    imap_account: ImapAccount, tmp_path: Path
) -> None:
    fill_simple(imap_account, 6)
    db = tmp_path / "r.duckdb"

    crashed = run_fetch(imap_account, db, "--batch-size", "3", env={"DMARCLENS_FAILPOINT": "after_commit:1:kill"})

    assert crashed.returncode == -signal.SIGKILL
    assert stored_report_ids(db) == ["r0", "r1", "r2"]  # committed ...
    assert count(imap_account, "INBOX") == 6  # ... but not moved

    rerun = run_fetch(imap_account, db, "--batch-size", "3", "--json")

    assert rerun.returncode == 0, rerun.stderr
    out = json.loads(rerun.stdout)
    assert (out["stored"], out["duplicates"]) == (3, 3)
    _assert_exact(db, imap_account, [f"r{i}" for i in range(6)])
    assert query(db, "SELECT count(*) FROM ingest_items WHERE outcome = 'duplicate' AND reason = "
                     "'same report already stored'") == [(3,)]


def test_server_killed_mid_batch_run_fails_cleanly_and_rerun_gives_exact_totals(
    dovecot_factory: Callable[..., Dovecot], tmp_path: Path
) -> None:
    acct = _private_account(dovecot_factory)
    fill_simple(acct, 9)
    db = tmp_path / "r.duckdb"
    proc = start_fetch(acct, db, "--batch-size", "3",
                       env={"DMARCLENS_FAILPOINT": "after_fetch:2:stop", "DMARCLENS_IMAP_RETRIES": "1"})
    wait_stopped(proc)  # batch 1 is stored and moved; batch 2 is fetched, not yet stored

    acct.server.kill()
    resume(proc)
    proc.wait(timeout=60)

    err = stderr_of(proc)
    assert proc.returncode == 1, err
    assert "reconnecting in 1s (attempt 1 of 1)" in err
    [line] = [ln for ln in err.splitlines() if ln.startswith("dmarclens: error:")]
    assert f"{acct.user}@127.0.0.1:{acct.port}" in line and "connection refused" in line
    assert "3 message(s) are stored but not moved yet" in line
    assert stored_report_ids(db) == [f"r{i}" for i in range(6)]  # batch 2 was committed; its move failed

    acct.server.start()
    assert count(acct, "INBOX") == 6
    rerun = run_fetch(acct, db, "--batch-size", "3", "--json")

    assert rerun.returncode == 0, rerun.stderr
    assert (json.loads(rerun.stdout)["stored"], json.loads(rerun.stdout)["duplicates"]) == (3, 3)
    _assert_exact(db, acct, ALL_NINE)


def test_server_restarted_mid_batch_the_same_run_reconnects_and_finishes(
    dovecot_factory: Callable[..., Dovecot], tmp_path: Path
) -> None:
    acct = _private_account(dovecot_factory)
    fill_simple(acct, 9)
    db = tmp_path / "r.duckdb"
    proc = start_fetch(acct, db, "--batch-size", "3", "--json", env={"DMARCLENS_FAILPOINT": "after_fetch:2:stop"})
    wait_stopped(proc)

    acct.server.kill()
    acct.server.start()
    resume(proc)
    out, _ = proc.communicate(timeout=60)

    assert proc.returncode == 0, stderr_of(proc)
    assert "reconnecting in 1s (attempt 1 of 3)" in stderr_of(proc)
    summary = json.loads(out)
    # The committed-but-unmoved batch was moved after the reconnect, not parsed again.
    assert (summary["stored"], summary["duplicates"]) == (9, 0)
    _assert_exact(db, acct, ALL_NINE)


def test_uidvalidity_change_while_moves_are_pending_rescans_and_counts_once(
    dovecot_factory: Callable[..., Dovecot], tmp_path: Path
) -> None:
    """The folder is recreated (new UIDVALIDITY, new UIDs) between a commit and its move: the remembered
    UIDs must not be used; the messages are seen again, recognised as duplicates and moved."""
    acct = _private_account(dovecot_factory)
    fill_simple(acct, 4, folder="Reports")
    db = tmp_path / "r.duckdb"
    proc = start_fetch(acct, db, "--folder", "Reports", "--batch-size", "2", "--json",
                       env={"DMARCLENS_FAILPOINT": "after_commit:1:stop"})
    wait_stopped(proc)
    with acct.server.session(acct.user) as c:
        old_validity = c.select_folder("Reports")[b"UIDVALIDITY"]
        c.close_folder()
        c.rename_folder("Reports", "Old")
        c.create_folder("Reports")
        c.select_folder("Old")
        c.move(c.search("ALL"), "Reports")
        c.close_folder()
        c.delete_folder("Old")
        new_validity = c.select_folder("Reports")[b"UIDVALIDITY"]
    assert new_validity != old_validity
    acct.server.kill()  # drop the frozen process' connection
    acct.server.start()

    resume(proc)
    out, _ = proc.communicate(timeout=60)

    err = stderr_of(proc)
    assert proc.returncode == 0, err
    assert f"UIDVALIDITY changed ({old_validity} -> {new_validity})" in err
    summary = json.loads(out)
    assert (summary["stored"], summary["duplicates"]) == (4, 2)
    assert summary["mailboxes"][0]["uidvalidity"] == new_validity
    _assert_exact(db, acct, ["r0", "r1", "r2", "r3"], folder="Reports")


def test_sigterm_in_a_one_shot_run_stops_cleanly_and_loses_nothing(imap_account: ImapAccount, tmp_path: Path) -> None:
    fill_simple(imap_account, 4)
    db = tmp_path / "r.duckdb"
    proc = start_fetch(imap_account, db, "--batch-size", "2", env={"DMARCLENS_FAILPOINT": "after_fetch:2:stop"})
    wait_stopped(proc)  # batch 1 is stored and moved; batch 2 is fetched and in hand

    os.kill(proc.pid, signal.SIGTERM)
    resume(proc)
    proc.wait(timeout=60)

    err = stderr_of(proc)
    assert proc.returncode == 0, err
    assert "SIGTERM received" in err and "2 left in the folder" in err
    assert stored_report_ids(db) == ["r0", "r1"]
    assert count(imap_account, "INBOX") == 2
    assert run_fetch(imap_account, db).returncode == 0
    _assert_exact(db, imap_account, ["r0", "r1", "r2", "r3"])
