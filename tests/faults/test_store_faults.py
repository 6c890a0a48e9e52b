"""The database misbehaves under a run: held by another writer, or the disk fills up.

Either way the run must end with one clear error and exit 1, roll back what it
was writing, move no mail whose reports are not committed, and lose nothing:
once the fault is gone, a re-run stores everything exactly once.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmarclens.generator import many_small_reports
from tests.faults.harness import run_clean
from tests.faults.test_kill_fetch import fill
from tests.hostile.cases import good_mail
from tests.hostile.helpers import clean_env, rows
from tests.imap.helpers import ARCHIVE, INVALID, count, fetch_args
from tests.servers.plugin import ImapAccount

HOLD_SECONDS = 30


@contextlib.contextmanager
def writer_holding(db: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that opens the database read-write and keeps it for 30 s."""
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}); print('held', flush=True); "
                               f"time.sleep({HOLD_SECONDS})"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_fetch_against_a_locked_database_retries_then_exits_1_and_keeps_the_mail(
    imap_account: ImapAccount, tmp_path: Path
) -> None:
    fill(imap_account, [good_mail(f"lock-{i}") for i in range(10)])
    db = tmp_path / "locked.duckdb"
    env = clean_env({"DMARCLENS_IMAP_PASSWORD": imap_account.password, "DMARCLENS_LOCK_TIMEOUT": "2"})

    with writer_holding(db):
        rc, _, err = run_clean(fetch_args(imap_account, db), cwd=tmp_path, env=env)

    assert rc == 1, err
    assert "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.startswith("dmarclens: error:")]
    assert "locked" in line and str(db) in line and "attempts" in line  # it retried, then said so
    assert count(imap_account, "INBOX") == 10  # nothing moved: nothing was committed
    assert count(imap_account, ARCHIVE) == 0

    rc, _, err = run_clean(fetch_args(imap_account, db, "--json"), cwd=tmp_path, env=env)
    assert rc == 0, err
    assert rows(db, "SELECT count(*), sum(message_count) FROM reports") == [(10, 1270)]
    assert count(imap_account, "INBOX") == 0 and count(imap_account, ARCHIVE) == 10


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs just big enough for a migrated database; the test grows it when the fault is over."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root, as in CI): {res.stderr.strip()}")
    try:
        from dmarclens.store.db import connect

        connect(mnt / "d.duckdb").close()  # the schema, whatever migrations exist by now
        used_kb = sum(p.stat().st_size for p in mnt.iterdir()) // 1024
        resize(mnt, used_kb + 256)  # room for the schema, not for a batch of 300 reports
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def resize(mnt: Path, kb: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={kb}k", str(mnt)], check=True)


def test_ingest_on_a_full_disk_rolls_back_with_a_clear_error_and_a_rerun_stores_all(
    small_disk: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    reports = list(many_small_reports(300, seed=21))
    for name, data in reports:
        (folder / name).write_bytes(data)
    db = small_disk / "d.duckdb"

    rc, _, err = run_clean(["ingest", str(folder), "--db", str(db)], cwd=tmp_path, env=clean_env())

    assert rc == 1, err
    assert "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.startswith("dmarclens: error:")]
    assert "No space left on device" in line and "rolled back" in line and str(db) in line
    resize(small_disk, 64 * 1024)
    assert rows(db, "SELECT count(*) FROM reports") == [(0,)]  # all or nothing: nothing

    rc, _, err = run_clean(["ingest", str(folder), "--db", str(db), "--json"], cwd=tmp_path, env=clean_env())
    assert rc == 0, err
    assert rows(db, "SELECT count(*), count(DISTINCT report_key) FROM reports") == [(300, 300)]
    assert rows(db, "SELECT count(*) FROM ingest_items WHERE outcome = 'stored'") == [(300,)]


def test_fetch_on_a_full_disk_leaves_the_mail_in_inbox_and_a_rerun_stores_all(
    small_disk: Path, imap_account: ImapAccount, tmp_path: Path
) -> None:
    fill(imap_account, [good_mail(f"disk-{i}") for i in range(300)])
    db = small_disk / "d.duckdb"
    env = clean_env({"DMARCLENS_IMAP_PASSWORD": imap_account.password})

    rc, _, err = run_clean(fetch_args(imap_account, db, "--batch-size", "300"), cwd=tmp_path, env=env)

    assert rc == 1, err
    assert "Traceback" not in err
    assert "No space left on device" in err
    assert count(imap_account, "INBOX") == 300  # the batch was rolled back, so nothing was moved
    assert count(imap_account, ARCHIVE) == 0 and count(imap_account, INVALID) == 0
    resize(small_disk, 64 * 1024)
    assert rows(db, "SELECT count(*) FROM reports") == [(0,)]

    rc, _, err = run_clean(fetch_args(imap_account, db, "--batch-size", "300", "--json"), cwd=tmp_path, env=env)
    assert rc == 0, err
    assert rows(db, "SELECT count(*), sum(message_count) FROM reports") == [(300, 300 * 127)]
    assert count(imap_account, "INBOX") == 0 and count(imap_account, ARCHIVE) == 300
