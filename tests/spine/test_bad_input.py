"""Bad input: one clear line naming the input and the reason, the batch goes
on, the file is untouched, the reason is recorded, and the exit code says so."""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile
from pathlib import Path

import duckdb
import pytest

from dmarclens.generator.wrappers import MailMeta, report_email
from dmarclens.generator.xmlgen import render_report
from tests.conftest import run_cli
from tests.spine.conftest import make_spec
from tests.spine.test_ingest_files import WHEN

GOOD = render_report(make_spec(report_id="good"))

TLS_RPT = json.dumps({
    "organization-name": "Google Inc.", "date-range": {"start-datetime": "2026-10-05T00:00:00Z",
                                                       "end-datetime": "2026-10-05T23:59:59Z"},
    "contact-info": "smtp-tls-reporting@google.com", "report-id": "2026-10-05T00:00:00Z_example.com",
    "policies": [{"policy": {"policy-type": "sts", "policy-domain": "example.com"},
                  "summary": {"total-successful-session-count": 10, "total-failure-session-count": 0}}],
}).encode()

RUF_MAIL = (
    b"From: dmarc@receiver.example\r\nTo: ruf@example.com\r\nSubject: Failure report\r\n"
    b"Message-ID: <ruf-1@receiver.example>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nA message failed DMARC.\r\n"
    b"--b1\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: auth-failure\r\n"
    b"User-Agent: test\r\nVersion: 1\r\nAuth-Failure: dmarc\r\n\r\n--b1--\r\n"
)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


BAD_INPUTS: dict[str, tuple[bytes, str]] = {
    "empty.xml": (b"", "empty file"),
    "spaces.xml": (b"   \n\n", "empty file"),
    "truncated.xml": (GOOD[: len(GOOD) // 2], "invalid aggregate report"),
    "truncated.xml.gz": (gzip.compress(GOOD)[:60], "truncated gzip"),
    "corrupt.zip": (b"PK\x03\x04" + b"\x00" * 40, "corrupt zip"),
    "notes.txt": (b"just some text, not a report\n", "not a DMARC aggregate report"),
    "page.xml": (b"<html><body><h1>Hello</h1></body></html>", "invalid aggregate report"),
    "nopolicy.xml": (b"<feedback><report_metadata><org_name>x</org_name><email>a@x</email><report_id>1</report_id>"
                     b"<date_range><begin>1</begin><end>2</end></date_range></report_metadata></feedback>",
                     "invalid aggregate report"),
    "other.json": (b'{"hello": "world"}', "JSON that is not an SMTP TLS report"),
    "outlook.msg": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "Outlook .msg"),
    "junk.eml": (b"From: spammer@example.net\r\nSubject: Cheap pills\r\n\r\nBuy now!\r\n", "no report attachment"),
    "doctype.xml": (b'<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY x "y">]>' + GOOD[GOOD.index(b"<feedback"):],
                    "invalid aggregate report"),
}


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a-good.xml").write_bytes(GOOD)
    for name, (data, _) in BAD_INPUTS.items():
        (folder / name).write_bytes(data)
    (folder / "z-good-too.xml.gz").write_bytes(gzip.compress(render_report(make_spec(report_id="good2"))))
    (folder / "tls.json").write_bytes(TLS_RPT)
    (folder / "ruf.eml").write_bytes(RUF_MAIL)
    return folder


def test_each_bad_input_is_named_with_its_reason_and_the_batch_goes_on(batch: Path, tmp_path: Path) -> None:
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in batch.iterdir()}
    db = tmp_path / "db.duckdb"
    res = run_cli("ingest", str(batch), "--db", str(db), "--json")
    assert res.returncode == 3, res.stderr
    out = json.loads(res.stdout)
    assert out["stored"] == 2
    rejected = {Path(r["input"]).name: r["reason"] for r in out["rejected"]}
    assert set(rejected) == set(BAD_INPUTS)
    for name, (_, expected) in BAD_INPUTS.items():
        assert expected.lower() in rejected[name].lower(), (name, rejected[name])
        # one stderr line naming the file and the reason
        assert any(name in line and expected.lower() in line.lower() for line in res.stderr.splitlines()), name
    # recognised, recorded, not counted
    ignored = {Path(r["input"].split(" [")[0]).name: r["kind"] for r in out["ignored"]}
    assert ignored == {"tls.json": "smtp_tls", "ruf.eml": "failure"}
    # nothing was touched
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in batch.iterdir()}
    assert after == before
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = dict(con.execute(
            "SELECT regexp_extract(origin, '[^/]+$'), reason FROM ingest_items WHERE outcome = 'rejected'"
        ).fetchall())
        assert set(rows) == set(BAD_INPUTS) and all(rows.values())
        assert con.execute("SELECT count(*) FROM reports").fetchone() == (2,)
    finally:
        con.close()


def test_zip_with_several_reports_stores_all(tmp_path: Path) -> None:
    a = render_report(make_spec(report_id="z1"))
    b = render_report(make_spec(report_id="z2"))
    (tmp_path / "two.zip").write_bytes(_zip({"one.xml": a, "two.xml": b}))
    res = run_cli("ingest", str(tmp_path / "two.zip"), "--db", str(tmp_path / "d.duckdb"), "--json")
    assert res.returncode == 0
    assert json.loads(res.stdout)["stored"] == 2


def test_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.xml"
    good.write_bytes(GOOD)
    assert run_cli("ingest", str(good), "--db", str(tmp_path / "ok.duckdb")).returncode == 0
    # usage error
    assert run_cli("ingest").returncode == 2
    assert run_cli("ingest", str(good), "--bogus").returncode == 2
    # could not run: DB in a folder that does not exist
    res = run_cli("ingest", str(good), "--db", str(tmp_path / "nope" / "x.duckdb"))
    assert res.returncode == 1
    assert "does not exist" in res.stderr
    # a path that does not exist is a rejected input, not a crash
    res = run_cli("ingest", str(tmp_path / "missing.xml"), "--db", str(tmp_path / "ok.duckdb"))
    assert res.returncode == 3 and "missing.xml" in res.stderr


def test_locked_database_gives_exit_1_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "locked.duckdb"
    good = tmp_path / "good.xml"
    good.write_bytes(GOOD)
    holder = duckdb.connect(str(db))  # another writer holds the file
    try:
        res = run_cli("ingest", str(good), "--db", str(db), env={"DMARCLENS_LOCK_TIMEOUT": "1"})
    finally:
        holder.close()
    assert res.returncode == 1
    assert "locked" in res.stderr and str(db) in res.stderr
    # the input was not lost: it is still there and ingests once the lock is gone
    assert run_cli("ingest", str(good), "--db", str(db)).returncode == 0


def test_mail_sender_stands_in_for_an_empty_org_name(tmp_path: Path) -> None:
    spec = make_spec(report_id="noorg").with_quirks(empty_org_name=True)
    xml = render_report(spec)
    from dmarclens.generator.wrappers import attachment_for

    mail = report_email([attachment_for(spec, xml, "gzip")],
                        MailMeta("dmarc@reports.receiver.example", "rua@example.com", "r", WHEN, "<m@r>"))
    (tmp_path / "m.eml").write_bytes(mail)
    db = tmp_path / "d.duckdb"
    assert run_cli("ingest", str(tmp_path / "m.eml"), "--db", str(db)).returncode == 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT org_name FROM reports").fetchone()[0] == "receiver.example"
    finally:
        con.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "secret.xml"
    f.write_bytes(GOOD)
    f.chmod(0)
    res = run_cli("ingest", str(f), "--db", str(tmp_path / "d.duckdb"))
    assert res.returncode == 3 and "cannot read" in res.stderr


def test_a_corrupt_attachment_spoils_only_itself(tmp_path: Path) -> None:
    from dmarclens.generator.wrappers import Attachment, attachment_for

    spec = make_spec(report_id="beside-corrupt")
    good = attachment_for(spec, render_report(spec), "gzip")
    bad = Attachment("broken.zip", b"PK\x03\x04" + b"\x00" * 64, "application/zip")
    mail = report_email([good, bad], MailMeta("dmarc@google.com", "rua@example.com", "r", WHEN, "<two@g>"))
    (tmp_path / "two.eml").write_bytes(mail)
    res = run_cli("ingest", str(tmp_path / "two.eml"), "--db", str(tmp_path / "d.duckdb"), "--json")
    assert res.returncode == 3
    out = json.loads(res.stdout)
    assert out["stored"] == 1
    assert len(out["rejected"]) == 1 and "broken.zip" in out["rejected"][0]["input"]
    assert "corrupt zip" in out["rejected"][0]["reason"]
