"""`dmarclens fetch` end to end: real CLI process, real Dovecot, real DuckDB file.

Each test gets a fresh IMAP user on the session Dovecot (``imap_account``),
so tests share one server and never see each other's mail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.imap.helpers import (
    ARCHIVE,
    INVALID,
    cli_env,
    count,
    fetch_args,
    fill_mixed_mailbox,
    fill_simple,
    query,
    run_fetch,
    simple_report_mail,
    stored_report_ids,
    subjects,
)
from tests.servers.dovecot import Dovecot
from tests.servers.plugin import ImapAccount


def test_mixed_mailbox_every_report_stored_every_message_moved_rerun_adds_nothing(
    imap_account: ImapAccount, tmp_path: Path
) -> None:
    """xml/gz/zip attachments, inline XML, forwarded rfc822, a two-report message, a whole-body gzip,
    a re-sent duplicate, a failure report, junk, a corrupt zip and a half-broken message:
    all reports stored once, each message in the right folder, INBOX empty, re-run stores nothing."""
    box = fill_mixed_mailbox(imap_account)
    db = tmp_path / "r.duckdb"

    # Batch size 4 so the 13 messages cross several FETCH/commit/MOVE batches.
    first = run_fetch(imap_account, db, "--batch-size", "4", "--json")

    assert first.returncode == 3, first.stderr  # junk + corrupt were rejected: "finished, some rejected"
    out = json.loads(first.stdout)
    assert out["stored"] == len(box.report_ids) == 10
    assert out["duplicates"] == 1  # the re-sent copy of "xml"
    assert [m["archived"] for m in out["mailboxes"]] == [len(box.archive)]
    assert [m["invalid"] for m in out["mailboxes"]] == [3]
    assert stored_report_ids(db) == sorted(box.report_ids)
    assert count(imap_account, "INBOX") == 0
    assert subjects(imap_account, INVALID) == sorted(
        ["<junk-1@spam.example>", "<msg-corrupt@test.example>", "<msg-partial@test.example>"])
    assert len(subjects(imap_account, ARCHIVE)) == len(box.archive) == 10

    # The ledger names every rejected message by mailbox, UIDVALIDITY, UID and Message-ID, with a reason.
    rows = query(db, "SELECT uid, message_id, mailbox, uidvalidity, reason FROM ingest_items "
                     "WHERE outcome = 'rejected' ORDER BY uid")
    by_uid = {r[0]: r for r in rows}
    assert set(by_uid) == {box.uids["junk"], box.uids["corrupt"], box.uids["partial"]}
    assert by_uid[box.uids["junk"]][1] == "<junk-1@spam.example>"
    assert "no report attachment" in by_uid[box.uids["junk"]][4]
    assert "corrupt zip" in by_uid[box.uids["corrupt"]][4]
    assert all(r[2] == "INBOX" and r[3] and r[4] for r in rows)
    # The failure report is recorded as such, not counted, and archived.
    assert query(db, "SELECT outcome, report_kind FROM ingest_items WHERE uid = ?", [box.uids["ruf"]]) == [
        ("ignored", "failure")]
    # The two-report message stored both.
    assert query(db, "SELECT count(*) FROM ingest_items WHERE uid = ? AND outcome = 'stored'",
                 [box.uids["multi"]]) == [(2,)]
    assert query(db, "SELECT count(*), sum(stored) FROM ingest_runs WHERE command = 'fetch'") == [(1, 10)]
    # Traffic classes were computed on the connection the fetch committed with.
    assert query(db, "SELECT count(*) FILTER (WHERE traffic_class IS NULL), count(*) FROM records")[0][0] == 0

    second = run_fetch(imap_account, db, "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert (again["stored"], again["duplicates"], again["rejected"]) == (0, 0, [])
    assert stored_report_ids(db) == sorted(box.report_ids)
    assert query(db, "SELECT sum(message_count) FROM reports") == [(127 * 10,)]


def test_implicit_tls_with_ca_file_and_human_summary(imap_account: ImapAccount, tmp_path: Path) -> None:
    fill_simple(imap_account, 3)
    db = tmp_path / "r.duckdb"

    res = run_fetch(imap_account, db, tls="implicit")

    assert res.returncode == 0, res.stderr
    assert res.stdout == ""  # the summary goes to stderr; stdout is for --json only
    assert "3 message(s), moved 3 to archive and 0 to invalid" in res.stderr
    assert "3 stored, 0 duplicates, 0 rejected" in res.stderr
    assert stored_report_ids(db) == ["r0", "r1", "r2"]
    assert count(imap_account, ARCHIVE) == 3


def test_a_quiet_fetch_still_says_when_traffic_classes_were_not_updated(
        imap_account: ImapAccount, tmp_path: Path) -> None:
    """-q keeps a cron job's stderr to what needs a person; a classification that did not
    happen (the reports are stored) is one of those, as it is for `dmarclens ingest`."""
    fill_simple(imap_account, 2)
    db = tmp_path / "r.duckdb"
    bad = tmp_path / "bad.toml"
    bad.write_text("[identity]\nhistory_days = 0\n")

    res = run_fetch(imap_account, db, "--config", str(bad), global_args=("-q",))

    assert res.returncode == 0, res.stderr
    assert "warning: traffic classes not updated" in res.stderr
    assert stored_report_ids(db) == ["r0", "r1"]


def test_dry_run_reads_and_parses_but_stores_and_moves_nothing(imap_account: ImapAccount, tmp_path: Path) -> None:
    fill_simple(imap_account, 2)
    imap_account.server.append(imap_account.user, "INBOX", b"Subject: hi\r\nFrom: a@b.example\r\n\r\nhello\r\n")
    db = tmp_path / "r.duckdb"
    before = imap_account.server.list_folder(imap_account.user, "INBOX")

    res = run_fetch(imap_account, db, "--dry-run", "--json")

    assert res.returncode == 3, res.stderr
    out = json.loads(res.stdout)
    assert out["dry_run"] is True and out["stored"] == 2 and len(out["rejected"]) == 1
    assert out["mailboxes"][0]["archived"] == 2 and out["mailboxes"][0]["invalid"] == 1
    assert not db.exists()
    assert imap_account.server.list_folder(imap_account.user, "INBOX") == before
    assert imap_account.server.folders(imap_account.user) == ["INBOX"]  # no folders created either
    with imap_account.server.session(imap_account.user) as c:  # and nothing marked read
        c.select_folder("INBOX", readonly=True)
        assert c.search(["SEEN"]) == []

    # After a real run the dry run knows those reports are already stored.
    assert run_fetch(imap_account, db).returncode == 3
    fill_simple(imap_account, 2)  # the same two reports, re-sent
    again = json.loads(run_fetch(imap_account, db, "--dry-run", "--json").stdout)
    assert (again["stored"], again["duplicates"]) == (0, 2)


def test_server_without_move_falls_back_to_copy_delete_expunge(
    imap_account_no_move: ImapAccount, tmp_path: Path
) -> None:
    acct = imap_account_no_move
    with acct.server.session(acct.user) as c:
        assert b"MOVE" not in c.capabilities()
    fill_simple(acct, 5)
    db = tmp_path / "r.duckdb"

    res = run_fetch(acct, db, "--batch-size", "2")

    assert res.returncode == 0, res.stderr
    assert stored_report_ids(db) == [f"r{i}" for i in range(5)]
    assert count(acct, "INBOX") == 0  # expunged, not just flagged
    assert count(acct, ARCHIVE) == 5
    with acct.server.session(acct.user) as c:  # archived copies are clean: no \Deleted carried over
        c.select_folder(ARCHIVE, readonly=True)
        assert c.search(["DELETED"]) == []


def test_config_file_two_mailboxes_password_command_and_custom_folders(
    imap_account: ImapAccount, dovecot: Dovecot, tmp_path: Path
) -> None:
    """[imap] defaults + two [[mailboxes]] (one picks its own folders), passwords from commands."""
    other_user, other_pw = dovecot.new_user("second_box")
    fill_simple(imap_account, 2)
    for i in range(2, 5):
        dovecot.append(other_user, "Reports/DMARC", simple_report_mail(i))
    pw1, pw2 = tmp_path / "pw1", tmp_path / "pw2"
    pw1.write_text(imap_account.password + "\n")
    pw2.write_text(other_pw + "\n")
    db = tmp_path / "r.duckdb"
    cfg = tmp_path / "dmarclens.toml"
    cfg.write_text(
        f'db = "{db}"\n'
        "[imap]\n"
        f'host = "{dovecot.host}"\nport = {dovecot.imap_port}\ntls = "starttls"\nca_file = "{dovecot.ca_file}"\n'
        "batch_size = 2\n"
        "[[mailboxes]]\n"
        f'name = "first"\nuser = "{imap_account.user}"\npassword_command = "cat {pw1}"\n'
        "[[mailboxes]]\n"
        f'name = "second"\nuser = "{other_user}"\npassword_file = "{pw2}"\n'
        'folder = "Reports/DMARC"\narchive_folder = "Reports/Done"\ninvalid_folder = "Reports/Bad"\n'
    )
    res = subprocess.run([sys.executable, "-m", "dmarclens", "fetch", "--config", str(cfg), "--json"],
                         env=cli_env(None), capture_output=True, text=True, timeout=60, cwd=tmp_path)

    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["stored"] == 5
    assert [(m["mailbox"].split("@")[0], m["archived"]) for m in out["mailboxes"]] == [
        (imap_account.user, 2), (other_user, 3)]
    assert stored_report_ids(db) == [f"r{i}" for i in range(5)]
    assert count(imap_account, ARCHIVE) == 2
    assert len(dovecot.list_folder(other_user, "Reports/Done")) == 3
    assert dovecot.list_folder(other_user, "Reports/DMARC") == []
    # --mailbox picks one entry; it has nothing left to do.
    only = subprocess.run([sys.executable, "-m", "dmarclens", "fetch", "--config", str(cfg), "--mailbox", "second",
                           "--json"], env=cli_env(None), capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert only.returncode == 0, only.stderr
    assert [m["mailbox"].split("@")[0] for m in json.loads(only.stdout)["mailboxes"]] == [other_user]


def test_xoauth2_login_with_token_command(imap_account: ImapAccount, tmp_path: Path) -> None:
    """XOAUTH2 against Dovecot's oauth2 passdb (token checked by a local introspection endpoint)."""
    token = imap_account.server.add_token(imap_account.user)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    fill_simple(imap_account, 2)
    db = tmp_path / "r.duckdb"

    res = run_fetch(imap_account, db, "--oauth2-token-command", f"cat {token_file}", "--json",
                    env={"DMARCLENS_IMAP_PASSWORD": "not-the-password"})

    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["stored"] == 2
    assert any(r["token"] == token for r in imap_account.server.oauth.requests)  # really went through OAuth2

    imap_account.server.revoke_token(token)
    fill_simple(imap_account, 1, start=7)
    denied = run_fetch(imap_account, db, "--oauth2-token-command", f"cat {token_file}")
    assert denied.returncode == 1
    assert "login failed" in denied.stderr and imap_account.user in denied.stderr
    assert token not in denied.stderr + denied.stdout
    assert count(imap_account, "INBOX") == 1


def test_since_size_limit_and_progress_bar_on_a_terminal(imap_account: ImapAccount, tmp_path: Path) -> None:
    """--since leaves older mail alone; an oversized message is not downloaded but moved to the
    invalid folder with the reason; on a terminal a progress bar is drawn."""
    import os
    from datetime import datetime

    fill_simple(imap_account, 3)
    imap_account.server.append(imap_account.user, "INBOX", simple_report_mail(8),
                               msg_time=datetime(2020, 1, 1, 12, 0))
    padding = "x" * 300_000
    big = simple_report_mail(9).replace(b"\r\n\r\n", f"\r\nX-Padding: {padding}\r\n\r\n".encode(), 1)
    big_uid = imap_account.server.append(imap_account.user, "INBOX", big)
    db = tmp_path / "r.duckdb"
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dmarclens", *fetch_args(imap_account, db, "--since", "2026-01-01")],
            env=cli_env(imap_account, {"DMARCLENS_IMAP_MAX_MESSAGE_MB": "0.2"}),
            stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=60)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    terminal = b"".join(chunks).decode()

    assert proc.returncode == 3, terminal
    assert f"fetch {imap_account.user}@127.0.0.1:{imap_account.port}/INBOX: [" in terminal
    assert "4/4 messages (3 archived, 1 invalid)" in terminal
    assert stored_report_ids(db) == ["r0", "r1", "r2"]
    assert count(imap_account, "INBOX") == 1  # the 2020 message, untouched
    [(reason, message_id)] = query(db, "SELECT reason, message_id FROM ingest_items WHERE uid = ?", [big_uid])
    assert "over the 0.2 MB limit" in reason and message_id == "<msg-9@test.example>"
    assert count(imap_account, INVALID) == 1
