"""Ingesting files end to end through the real CLI into a real DuckDB file."""

from __future__ import annotations

import gzip
import json
import mailbox
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from dmarclens.generator.spec import DkimAuth, OverrideReason, RecordSpec, SpfAuth
from dmarclens.generator.wrappers import (
    MailMeta,
    attachment_for,
    forward_email,
    inline_report_email,
    mbox_bytes,
    report_email,
    report_file,
    whole_body_gzip_email,
)
from dmarclens.generator.xmlgen import render_report
from tests.conftest import run_cli
from tests.spine.conftest import DAY0, make_spec

WHEN = datetime(2026, 10, 6, 8, 0, tzinfo=UTC)


def meta(n: int, sender: str = "noreply-dmarc-support@google.com") -> MailMeta:
    return MailMeta(sender, "dmarc@example.com", f"Report {n}", WHEN, f"<msg-{n}@google.com>")


def q(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_every_wrapper_stores_the_report_once(tmp_path: Path) -> None:
    """xml, gz, zip, eml (attached/inline/whole-body gzip/forwarded/multi), mbox, Maildir."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    specs = [make_spec(report_id=f"w{i}", begin=DAY0 + i * 86400) for i in range(9)]
    xmls = [render_report(s) for s in specs]
    for kind, i in (("xml", 0), ("xml.gz", 1), ("zip", 2)):
        name, data = report_file(specs[i], xmls[i], kind)  # type: ignore[arg-type]
        (inbox / name).write_bytes(data)
    (inbox / "attached.eml").write_bytes(report_email([attachment_for(specs[3], xmls[3], "x-zip")], meta(3)))
    (inbox / "inline.eml").write_bytes(inline_report_email(xmls[4], meta(4)))
    gz = gzip.compress(xmls[5], mtime=0)
    (inbox / "mimecast.eml").write_bytes(whole_body_gzip_email(gz, "report.xml.gz", meta(5)))
    inner = report_email([attachment_for(specs[6], xmls[6], "octet-gz")], meta(6))
    (inbox / "forwarded.eml").write_bytes(forward_email(inner, meta(60, "colleague@example.com")))
    two = report_email([attachment_for(specs[7], xmls[7], "gzip"), attachment_for(specs[8], xmls[8], "zip")], meta(7))
    (inbox / "box.mbox").write_bytes(mbox_bytes([(two, "x@google.com", WHEN)]))
    md = mailbox.Maildir(str(tmp_path / "Maildir"), create=True)
    md.add(report_email([attachment_for(specs[0], xmls[0], "xml")], meta(8)))  # same report as the .xml file
    md.close()

    db = tmp_path / "db.duckdb"
    res = run_cli("ingest", str(inbox), str(tmp_path / "Maildir"), "--db", str(db), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["stored"] == 9
    assert out["duplicates"] == 1
    assert out["rejected"] == []
    assert out["records"] == 18
    assert out["messages"] == 9 * 127
    assert q(db, "SELECT count(*), sum(message_count) FROM reports") == [(9, 9 * 127)]
    kinds = dict(q(db, "SELECT origin_kind, count(*) FROM ingest_items GROUP BY 1"))
    assert kinds == {"file": 3, "eml": 4, "mbox": 2, "maildir": 1}
    # the forwarded copy carries its Message-ID, the mail sender's domain is not confused with the reporter
    assert q(db, "SELECT DISTINCT org_name FROM reports") == [("google.com",)]


def test_golden_values_of_one_report(tmp_path: Path) -> None:
    recs = [
        RecordSpec(
            source_ip="40.107.22.10", count=120, header_from="Example.com", envelope_from="example.com",
            envelope_to="gmail.com", dkim=(DkimAuth("example.com", "selector1", "pass"),
                                           DkimAuth("example.onmicrosoft.com", "selector1", "pass")),
            spf=(SpfAuth("example.com", "pass"),),
        ),
        RecordSpec(
            source_ip="2a01:111:f400::1", count=5, header_from="example.com", dkim_eval="fail", spf_eval="fail",
            disposition="quarantine", reasons=(OverrideReason("forwarded", "list"),),
            dkim=(DkimAuth("lists.example.org", "s1", "pass"),), spf=(SpfAuth("lists.example.org", "softfail"),),
        ),
    ]
    spec = make_spec(org="Enterprise Outlook", records=recs, p="quarantine", sp="reject", pct=50, adkim="s")
    (tmp_path / "r.xml").write_bytes(render_report(spec))
    db = tmp_path / "db.duckdb"
    assert run_cli("ingest", str(tmp_path / "r.xml"), "--db", str(db)).returncode == 0
    rep = q(db, "SELECT org_name, report_id, domain, p, sp, pct, adkim, aspf, format, begin_ts, span_seconds FROM reports")
    assert rep == [("Enterprise Outlook", "r-1", "example.com", "quarantine", "reject", 50, "s", "r", "rfc7489",
                    datetime.fromtimestamp(DAY0, UTC), 86399)]
    rows = q(db, """SELECT source_ip, count, disposition, dmarc_pass, dkim_aligned, spf_aligned, header_from,
                           envelope_from, envelope_to, dkim, spf, override_reasons, day, service_name, country
                    FROM v_records ORDER BY count DESC""")
    assert rows[0][:9] == ("40.107.22.10", 120, "none", True, True, True, "example.com", "example.com", "gmail.com")
    assert rows[0][9] == [{"domain": "example.com", "selector": "selector1", "result": "pass"},
                          {"domain": "example.onmicrosoft.com", "selector": "selector1", "result": "pass"}]
    assert rows[0][10] == [{"domain": "example.com", "scope": "mfrom", "result": "pass"}]
    assert rows[0][12].isoformat() == "2026-10-05"
    assert rows[0][13] == "Microsoft"  # offline service from the bundled IP database
    assert rows[1][:6] == ("2a01:111:f400::1", 5, "quarantine", False, False, False)
    assert rows[1][11] == [{"type": "forwarded", "comment": "list"}]
    assert rows[1][10] == [{"domain": "lists.example.org", "scope": "mfrom", "result": "softfail"}]


def test_rfc9990_fields_and_draft_format(tmp_path: Path) -> None:
    new = make_spec(report_id="n1", fmt="rfc9990", np="reject", testing="n", discovery_method="treewalk", pct=None)
    new.generator = "acme-dmarc 2.1"
    old = make_spec(report_id="d1", fmt="draft", begin=DAY0 + 86400)
    (tmp_path / "new.xml").write_bytes(render_report(new))
    (tmp_path / "old.xml").write_bytes(render_report(old))
    db = tmp_path / "db.duckdb"
    assert run_cli("ingest", str(tmp_path), "--db", str(db)).returncode == 0
    rows = q(db, "SELECT report_id, format, np, testing, discovery_method, generator, xml_namespace FROM reports ORDER BY 1")
    assert rows == [
        ("d1", "draft", None, None, None, None, None),
        ("n1", "rfc9990", "reject", "n", "treewalk", "acme-dmarc 2.1", "urn:ietf:params:xml:ns:dmarc-2.0"),
    ]


def test_multi_day_report_is_split_into_days(tmp_path: Path) -> None:
    spec = make_spec(report_id="m1", span=3 * 86400)  # 72 hours, midnight to midnight
    (tmp_path / "m.xml").write_bytes(render_report(spec))
    db = tmp_path / "db.duckdb"
    assert run_cli("ingest", str(tmp_path / "m.xml"), "--db", str(db)).returncode == 0
    per_day = q(db, "SELECT day::VARCHAR, sum(count) FROM records GROUP BY 1 ORDER BY 1")
    assert [d for d, _ in per_day] == ["2026-10-05", "2026-10-06", "2026-10-07"]
    assert sum(c for _, c in per_day) == 127  # pro-rated, never inflated
    assert q(db, "SELECT message_count FROM reports") == [(127,)]


def test_duplicates_never_double_totals(tmp_path: Path) -> None:
    spec = make_spec(report_id="dup")
    xml = render_report(spec)
    name, gz = report_file(spec, xml, "xml.gz")
    a = tmp_path / "a"
    a.mkdir()
    (a / name).write_bytes(gz)
    (a / "renamed-copy.xml").write_bytes(xml)
    (a / "copy.eml").write_bytes(report_email([attachment_for(spec, xml, "zip")], meta(1)))
    db = tmp_path / "db.duckdb"
    first = json.loads(run_cli("ingest", str(a), "--db", str(db), "--json").stdout)
    assert (first["stored"], first["duplicates"]) == (1, 2)
    again = run_cli("ingest", str(a), "--db", str(db), "--json")
    assert again.returncode == 0
    second = json.loads(again.stdout)
    assert (second["stored"], second["duplicates"], second["messages"]) == (0, 3, 0)
    assert q(db, "SELECT count(*), sum(count) FROM records") == [(2, 127)]
    assert q(db, "SELECT count(*) FROM ingest_items WHERE outcome = 'duplicate'") == [(5,)]


def test_resent_report_with_different_content_is_kept_once_and_explained(tmp_path: Path) -> None:
    spec = make_spec(report_id="same-id")
    (tmp_path / "one.xml").write_bytes(render_report(spec))
    changed = make_spec(report_id="same-id", records=[RecordSpec(source_ip="198.51.100.1", count=999, header_from="example.com")])
    (tmp_path / "two.xml").write_bytes(render_report(changed))
    db = tmp_path / "db.duckdb"
    res = run_cli("ingest", str(tmp_path / "one.xml"), str(tmp_path / "two.xml"), "--db", str(db), "--json")
    assert res.returncode == 0
    assert q(db, "SELECT sum(count) FROM records") == [(127,)]
    reason = q(db, "SELECT reason FROM ingest_items WHERE outcome = 'duplicate'")[0][0]
    assert "different content" in reason
