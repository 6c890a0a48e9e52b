"""The errors people hit with `dmarclens fetch`: one clear line naming host, user (and folder),
never the secret, and the documented exit code. Nothing is stored or moved when a run cannot start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.imap.helpers import (
    ARCHIVE,
    cli_env,
    count,
    fetch_args,
    fill_simple,
    query,
    resume,
    run_fetch,
    start_fetch,
    stderr_of,
    stored_report_ids,
    wait_stopped,
)
from tests.servers.plugin import ImapAccount
from tests.servers.ports import free_port


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dmarclens: error:")]


def test_self_signed_certificate_is_refused_without_ca_file(imap_account: ImapAccount, tmp_path: Path) -> None:
    fill_simple(imap_account, 1)
    for tls, port in (("starttls", imap_account.port), ("implicit", imap_account.imaps_port)):
        res = run_fetch(imap_account, tmp_path / "r.duckdb", "--tls", tls, "--port", str(port), tls="bare")

        assert res.returncode == 1, res.stderr
        [line] = _error_lines(res.stderr)
        assert f"{imap_account.user}@127.0.0.1:{port}" in line
        assert "certificate" in line and "--ca-file" in line
        assert "Traceback" not in res.stderr
    assert count(imap_account, "INBOX") == 1
    assert not (tmp_path / "r.duckdb").exists()


def test_insecure_skips_certificate_checks_and_warns_loudly(imap_account: ImapAccount, tmp_path: Path) -> None:
    fill_simple(imap_account, 1)
    db = tmp_path / "r.duckdb"

    res = run_fetch(imap_account, db, "--tls", "implicit", "--port", str(imap_account.imaps_port), "--insecure",
                    tls="bare")

    assert res.returncode == 0, res.stderr
    assert "WARNING: --insecure" in res.stderr and "NOT checked" in res.stderr
    assert stored_report_ids(db) == ["r0"]


def test_wrong_password_exit_1_names_host_and_user_never_the_password(
    imap_account: ImapAccount, tmp_path: Path
) -> None:
    fill_simple(imap_account, 1)
    wrong = "Wr0ng-S3cret-Pa55word"
    res = run_fetch(imap_account, tmp_path / "r.duckdb", "--json", env={"DMARCLENS_IMAP_PASSWORD": wrong})

    assert res.returncode == 1
    [line] = _error_lines(res.stderr)
    assert f"{imap_account.user}@127.0.0.1:{imap_account.port}" in line and "login failed" in line
    assert wrong not in res.stderr + res.stdout
    assert imap_account.password not in res.stderr + res.stdout
    assert json.loads(res.stdout)["mailboxes"][0]["error"] == line.split("error: ", 1)[1]
    assert count(imap_account, "INBOX") == 1


@pytest.mark.parametrize("case", ["unknown host", "refused port"])
def test_unreachable_server_exit_1_with_one_clear_line(case: str, tmp_path: Path) -> None:
    host, port = ("imap.no-such-host.invalid", 993) if case == "unknown host" else ("127.0.0.1", free_port())
    res = subprocess.run(
        [sys.executable, "-m", "dmarclens", "fetch", "--host", host, "--port", str(port), "--user", "rua",
         "--db", str(tmp_path / "r.duckdb")],
        env=cli_env(None, {"DMARCLENS_IMAP_PASSWORD": "pw"}), capture_output=True, text=True, timeout=60,
    )

    assert res.returncode == 1
    [line] = _error_lines(res.stderr)
    assert f"rua@{host}:{port}" in line
    assert ("cannot resolve host" in line) if case == "unknown host" else ("connection refused" in line)


def test_missing_folder_is_named_and_archive_folders_are_created(imap_account: ImapAccount, tmp_path: Path) -> None:
    res = run_fetch(imap_account, tmp_path / "r.duckdb", "--folder", "Reports/Missing")

    assert res.returncode == 1
    [line] = _error_lines(res.stderr)
    assert "'Reports/Missing'" in line and "does not exist" in line and imap_account.user in line
    assert "INBOX" in line  # the folders that do exist are listed

    fill_simple(imap_account, 1)
    ok = run_fetch(imap_account, tmp_path / "r.duckdb", "--archive-folder", "Deep/Er/Archive")
    assert ok.returncode == 0, ok.stderr
    assert count(imap_account, "Deep/Er/Archive") == 1


def test_secrets_never_on_the_command_line_in_output_or_in_the_database(
    imap_account: ImapAccount, tmp_path: Path
) -> None:
    res = subprocess.run([sys.executable, "-m", "dmarclens", *fetch_args(imap_account, tmp_path / "x.duckdb"),
                          "--password", imap_account.password],
                         env=cli_env(None), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2  # there is no --password option, on purpose

    nopw = subprocess.run([sys.executable, "-m", "dmarclens", *fetch_args(imap_account, tmp_path / "x.duckdb")],
                          env=cli_env(None), capture_output=True, text=True, timeout=60)
    assert nopw.returncode == 2 and "DMARCLENS_IMAP_PASSWORD" in nopw.stderr

    fill_simple(imap_account, 2)
    imap_account.server.append(imap_account.user, "INBOX", b"Subject: x\r\n\r\nnot a report\r\n")
    db = tmp_path / "r.duckdb"
    pw_file = tmp_path / "pw"
    pw_file.write_text(imap_account.password)
    run = run_fetch(imap_account, db, "--json", "--password-file", str(pw_file), global_args=["-vv"],
                    env={"DMARCLENS_IMAP_PASSWORD": "overridden-by-the-file"})
    assert run.returncode == 3, run.stderr
    assert imap_account.password not in run.stdout + run.stderr
    assert "overridden-by-the-file" not in run.stdout + run.stderr
    assert imap_account.password.encode() not in db.read_bytes()
    dump = query(db, "SELECT string_agg(CAST(COLUMNS(*) AS VARCHAR), '|') FROM ingest_items")
    assert imap_account.password not in str(dump)


def test_lock_prevents_overlapping_runs_on_the_same_db_and_mailbox(imap_account: ImapAccount, tmp_path: Path) -> None:
    fill_simple(imap_account, 6)
    db = tmp_path / "r.duckdb"
    first = start_fetch(imap_account, db, "--batch-size", "2", env={"DMARCLENS_FAILPOINT": "after_fetch:1:stop"})
    try:
        wait_stopped(first)

        second = run_fetch(imap_account, db, "--json")

        assert second.returncode == 0, second.stderr
        assert "already working on this mailbox" in second.stderr and f"pid {first.pid}" in second.stderr
        assert json.loads(second.stdout)["mailboxes"][0]["locked"] is True
    finally:
        resume(first)
        first.wait(timeout=60)
    assert first.returncode == 0, stderr_of(first)
    assert stored_report_ids(db) == [f"r{i}" for i in range(6)]
    assert count(imap_account, ARCHIVE) == 6
    # The lock dies with its holder: a later run gets it at once.
    assert run_fetch(imap_account, db).returncode == 0


def test_database_locked_by_another_writer_exit_1_and_the_mail_stays(imap_account: ImapAccount, tmp_path: Path) -> None:
    fill_simple(imap_account, 2)
    db = tmp_path / "r.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
         "time.sleep(60)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"

        res = run_fetch(imap_account, db, env={"DMARCLENS_LOCK_TIMEOUT": "1"})
    finally:
        holder.kill()
        holder.wait()

    assert res.returncode == 1
    [line] = _error_lines(res.stderr)
    assert "is locked by another dmarclens process" in line and imap_account.user in line
    assert count(imap_account, "INBOX") == 2  # fetched, not stored, so not moved
    assert run_fetch(imap_account, db).returncode == 0
    assert stored_report_ids(db) == ["r0", "r1"]
