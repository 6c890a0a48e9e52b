"""Hostile input through a real Dovecot: the mail cases of tests/hostile/cases.py
and a representative set of the file cases sent as attachments, between good
report mail, in one `dmarclens fetch`.

Asserted: the run ends (exit 3), every hostile message is moved to the invalid
folder (or the archive when its report is stored on purpose) with its reason in
ingest_items next to its UID, the good mail is archived with exact totals,
INBOX is empty, and the fetch process stays under RSS_LIMIT_MB.
"""

from __future__ import annotations

import email
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hostile.cases import CASES, OWNED, good_mail, mail_with
from tests.hostile.helpers import RSS_LIMIT_MB, clean_env, rows, run_measured
from tests.imap.helpers import ARCHIVE, INVALID, count, fetch_args
from tests.servers.plugin import ImapAccount

WRAPPED = {  # file case -> (attachment content type, expected folder)
    "zip-bomb.zip": "application/zip",
    "gzip-bomb.xml.gz": "application/gzip",
    "billion-laughs.xml": "text/xml",
    "xxe.xml": "text/xml",
    "negative-count.xml": "text/xml",
    "year-2100.xml": "text/xml",
    "million-records.xml.gz": "application/gzip",
    "traversal.zip": "application/zip",
    "not-owned.xml": "text/xml",
    "control-chars.xml": "text/xml",
}
MAX_MESSAGE_MB = 20


@dataclass(frozen=True)
class Expect:
    outcome: str
    reason: str | None
    folder: str


def _expectations() -> dict[str, Expect]:
    by_name = {c.name: c for c in CASES}
    out: dict[str, Expect] = {}
    for case in CASES:
        if case.mail:
            out[case.name] = Expect(case.outcome, case.reason, ARCHIVE if case.outcome == "stored" else INVALID)
    for name in WRAPPED:
        case = by_name[name]
        reason = "bomb" if name == "zip-bomb.zip" else case.reason  # a mail refuses it from the zip directory
        out[name] = Expect(case.outcome, reason, ARCHIVE if case.outcome == "stored" else INVALID)
    out["oversize-imap.eml"] = Expect("rejected", "max_message_mb", INVALID)
    return out


def _messages(root: Path) -> dict[str, bytes]:
    by_name = {c.name: c for c in CASES}
    msgs: dict[str, bytes] = {}
    for name in _expectations():
        if name == "oversize-imap.eml":
            msgs[name] = mail_with("oversize", b"\0" * ((MAX_MESSAGE_MB + 5) * 1024 * 1024), "big.xml.gz",
                                   "application/gzip")
        elif name in WRAPPED:
            msgs[name] = mail_with(f"w-{name}", by_name[name].build(root), name, WRAPPED[name])
        else:
            msgs[name] = by_name[name].build(root)
    return msgs


def _message_id(data: bytes) -> str:
    return str(email.message_from_bytes(data[:65536]).get("Message-ID", "")).strip()


def test_hostile_mail_is_moved_to_invalid_with_its_reason_and_good_mail_is_archived(
    imap_account: ImapAccount, tmp_path: Path
) -> None:
    expect = _expectations()
    msgs = _messages(tmp_path)
    uids: dict[int, str] = {}
    good = [f"imap-good-{i}" for i in range(3)]
    for i, name in enumerate(msgs):
        if i % 4 == 0 and good[i // 4:i // 4 + 1]:
            imap_account.server.append(imap_account.user, "INBOX", good_mail(good[i // 4]))
        uids[imap_account.server.append(imap_account.user, "INBOX", msgs[name])] = name
    db = tmp_path / "imap.duckdb"
    env = clean_env({"DMARCLENS_IMAP_PASSWORD": imap_account.password, "DMARCLENS_DOMAINS": OWNED,
                     "DMARCLENS_IMAP_MAX_MESSAGE_MB": str(MAX_MESSAGE_MB)})

    run = run_measured(fetch_args(imap_account, db, "--json", "--batch-size", "7"), cwd=tmp_path, env=env)

    assert run.returncode == 3, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert run.peak_mb < RSS_LIMIT_MB, f"peak RSS {run.peak_mb:.0f} MB"
    print(f"\nhostile IMAP batch: {len(msgs)} hostile messages, peak RSS {run.peak_mb:.0f} MB")
    summary = json.loads(run.stdout)
    assert summary["mailboxes"][0]["invalid"] == sum(1 for e in expect.values() if e.folder == INVALID)
    # every message left INBOX for the folder its outcome calls for
    assert count(imap_account, "INBOX") == 0
    in_folder = {
        folder: {_message_id(data) for _uid, data in imap_account.server.list_folder(imap_account.user, folder)}
        for folder in (ARCHIVE, INVALID)
    }
    for name, data in msgs.items():
        assert _message_id(data) in in_folder[expect[name].folder], name
    # the ledger names each message by UID with its outcome and reason
    ledger: dict[int, list[tuple[str, str | None]]] = {}
    for uid, outcome, reason, mailbox in rows(db, "SELECT uid, outcome, reason, mailbox FROM ingest_items"):
        assert mailbox == "INBOX"
        ledger.setdefault(uid, []).append((outcome, reason))
    for uid, name in uids.items():
        assert ledger.get(uid), f"{name}: no ledger row"
        for outcome, reason in ledger[uid]:
            assert outcome == expect[name].outcome, (name, outcome, reason)
            if expect[name].reason:
                assert reason and expect[name].reason in reason.lower(), (name, reason)
    # the good mail around them is stored exactly
    assert rows(db, "SELECT count(*), sum(message_count) FROM reports WHERE report_id LIKE 'imap-good-%'") == [
        (3, 381)]
    # a report for someone else's domain is archived (nothing wrong with the mail) but counted nowhere
    assert rows(db, "SELECT owned, mail_auth FROM v_report_trust WHERE domain = 'attacker.example'") == [
        (False, "unverified")]
    assert rows(db, "SELECT count(*) FROM v_records WHERE domain = 'attacker.example'") == [(0,)]


@pytest.mark.parametrize("name", ["billion-laughs.xml", "zip-bomb.zip"])
def test_a_rerun_finds_nothing_left_and_stores_nothing(imap_account: ImapAccount, tmp_path: Path, name: str) -> None:
    by_name = {c.name: c for c in CASES}
    imap_account.server.append(imap_account.user, "INBOX",
                               mail_with(f"again-{name}", by_name[name].build(tmp_path), name, WRAPPED[name]))
    db = tmp_path / "again.duckdb"
    env = clean_env({"DMARCLENS_IMAP_PASSWORD": imap_account.password})
    first = run_measured(fetch_args(imap_account, db, "--json"), cwd=tmp_path, env=env)
    second = run_measured(fetch_args(imap_account, db, "--json"), cwd=tmp_path, env=env)
    assert (first.returncode, second.returncode) == (3, 0)
    assert json.loads(second.stdout)["mailboxes"][0]["messages"] == 0
    assert count(imap_account, INVALID) == 1 and count(imap_account, "INBOX") == 0
