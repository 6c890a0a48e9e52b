"""A big report arriving by mail: `dmarclens fetch` parses it apart from its own
memory (a forked child, the member inflated into an unnamed file, the rows
spilled), and stores exactly what ingesting the same XML from a file stores.

Real Dovecot, real CLI process, real DuckDB file; the report is big enough
(4.5 MB of XML, 7,000 records) to take the big-report path for real.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dmarclens.core.models import RawItem
from dmarclens.generator import Attachment, big_report_xml
from dmarclens.ingest import pool
from dmarclens.ingest.parsed import parse_raw
from dmarclens.ingest.writer import ingest_paths
from tests.hostile.cases import zip_of
from tests.imap.helpers import WHEN, query, run_fetch
from tests.servers.plugin import ImapAccount

RECORDS = "SELECT source_ip, count, disposition, dkim, spf, day FROM records r JOIN reports p USING (report_key) " \
          "WHERE p.report_id = ? ORDER BY ALL"


def _mail(report_id: str, att: Attachment) -> bytes:
    from dmarclens.generator import MailMeta, report_email

    meta = MailMeta("noreply-dmarc-support@google.com", "dmarc@example.com",
                    f"Report Domain: example.com Submitter: google.com Report-ID: {report_id}", WHEN,
                    f"<{report_id}@google.com>")
    return report_email([att], meta)


def _report_id(xml: bytes) -> str:
    start = xml.index(b"<report_id>") + len(b"<report_id>")
    return xml[start: xml.index(b"</report_id>")].decode()


def test_big_gzip_and_zip_reports_by_mail_are_stored_as_from_files(imap_account: ImapAccount,
                                                                   tmp_path: Path) -> None:
    gz_xml = big_report_xml(7_000, 2_000, seed=31)
    zip_xml = big_report_xml(7_000, 2_000, seed=32)
    assert len(gz_xml) > pool.BIG_ITEM_BYTES and len(zip_xml) > pool.BIG_ITEM_BYTES
    gz = gzip.compress(gz_xml)
    server, user, _ = imap_account
    server.append(user, "INBOX", _mail("big-gz", Attachment("google.com!example.com!big.xml.gz", gz)))
    server.append(user, "INBOX", _mail("big-zip", Attachment("google.com!example.com!big.zip",
                                                             zip_of({"big.xml": zip_xml}), "application/zip")))
    db = tmp_path / "imap.duckdb"
    res = run_fetch(imap_account, db, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["stored"] == 2 and out["records"] == 14_000

    files = tmp_path / "files"
    files.mkdir()
    (files / "a.xml").write_bytes(gz_xml)
    (files / "b.xml").write_bytes(zip_xml)
    ref = tmp_path / "files.duckdb"
    assert ingest_paths([files], ref, workers=1).stored == 2
    for xml in (gz_xml, zip_xml):
        rid = _report_id(xml)
        got = query(db, RECORDS, [rid])
        assert len(got) == 7_000 and got == query(ref, RECORDS, [rid])
    # The ledger hashes what the mail carried: the .gz as attached, the zip's member.
    ledger = set(query(db, "SELECT sha256, size_bytes FROM ingest_items WHERE outcome = 'stored'"))
    assert ledger == {(hashlib.sha256(gz).hexdigest(), len(gz)), (hashlib.sha256(zip_xml).hexdigest(), len(zip_xml))}
    assert not [p for p in tmp_path.rglob("*") if ".dmarclens-spill-" in p.name or p.suffix == ".arrow"]


def test_a_big_item_is_parsed_apart_only_while_no_other_thread_runs(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Watch mode serves mailboxes on threads: a fork there could copy a lock
    another thread holds, so big items are then parsed in-process."""
    raw = RawItem(data=gzip.compress(big_report_xml(7_000, 2_000, seed=33)), origin="imap://x", name="a.xml.gz")
    calls: list[str] = []
    monkeypatch.setattr(pool, "_isolated", lambda r, **k: calls.append("child") or parse_raw(r))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        (parsed,) = pool.parse_apart([raw], spill_dir=str(tmp_path))
    finally:
        stop.set()
        other.join()
    assert calls == [] and parsed.error is None and len(parsed.item.report.records) == 7_000
    # Alone, the same item goes to a child (in a fresh process: this one may run pytest's threads).
    code = ("import gzip, sys; from dmarclens.ingest import pool; from dmarclens.core.models import RawItem; "
            "from dmarclens.generator import big_report_xml; calls = []; real = pool._isolated; "
            "pool._isolated = lambda r, **k: calls.append(1) or real(r, **k); "
            "raw = RawItem(data=gzip.compress(big_report_xml(7_000, 2_000, seed=33)), origin='imap://x'); "
            "(p,) = pool.parse_apart([raw], spill_dir=sys.argv[1]); "
            "print(len(calls), p.error, len(p.item.report.records))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "None", "7000"], out.stderr
