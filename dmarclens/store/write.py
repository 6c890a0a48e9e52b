"""Writing parsed reports, lineage and IP facts into an open connection.

Callers own the transaction: the pipeline writes a whole batch (reports, their
records, the ingest_items ledger rows) in one transaction, so a crash leaves
either all of it or none of it, and an IMAP message is moved only after the
commit that stored it.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import duckdb

from dmarclens.models import ItemResult, Report, RunSummary

if TYPE_CHECKING:
    import pyarrow as pa

    from dmarclens.enrich.offline import OfflineEnricher


def _records_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("report_key", pa.string()),
        ("day", pa.date32()),
        ("interval_begin", pa.timestamp("us", tz="UTC")),
        ("interval_end", pa.timestamp("us", tz="UTC")),
        ("source_ip", pa.string()),
        ("count", pa.int64()),
        ("disposition", pa.string()),
        ("policy_dkim", pa.string()),
        ("policy_spf", pa.string()),
        ("dkim_aligned", pa.bool_()),
        ("spf_aligned", pa.bool_()),
        ("dmarc_pass", pa.bool_()),
        ("override_reasons", pa.list_(pa.struct([("type", pa.string()), ("comment", pa.string())]))),
        ("header_from", pa.string()),
        ("envelope_from", pa.string()),
        ("envelope_to", pa.string()),
        ("dkim", pa.list_(pa.struct([("domain", pa.string()), ("selector", pa.string()), ("result", pa.string())]))),
        ("spf", pa.list_(pa.struct([("domain", pa.string()), ("scope", pa.string()), ("result", pa.string())]))),
        ("ingest_run_id", pa.string()),
    ])


RECORD_COLUMNS = (
    "report_key, day, interval_begin, interval_end, source_ip, count, disposition, policy_dkim, "
    "policy_spf, dkim_aligned, spf_aligned, dmarc_pass, override_reasons, header_from, envelope_from, "
    "envelope_to, dkim, spf, ingest_run_id"
)


def now_utc() -> datetime:
    return datetime.now(UTC)


def start_run(con: duckdb.DuckDBPyConnection, run_id: str, command: str, source_kind: str) -> None:
    from dmarclens import __version__

    con.execute(
        "INSERT INTO ingest_runs (run_id, started_at, command, source_kind, hostname, version) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [run_id, now_utc(), command, source_kind, socket.gethostname(), __version__],
    )


def update_run(con: duckdb.DuckDBPyConnection, summary: RunSummary, *, finished: bool) -> None:
    con.execute(
        "UPDATE ingest_runs SET finished_at = ?, items_seen = ?, stored = ?, duplicates = ?, "
        "rejected = ?, ignored = ?, records = ?, messages = ? WHERE run_id = ?",
        [
            now_utc() if finished else None, len(summary.items), summary.stored, summary.duplicates,
            summary.rejected, summary.ignored, summary.records, summary.messages, summary.run_id,
        ],
    )


def existing_keys(con: duckdb.DuckDBPyConnection, keys: list[str]) -> dict[str, str]:
    """report_key → raw_sha256 for keys already stored."""
    if not keys:
        return {}
    rows = con.execute(
        "SELECT report_key, raw_sha256 FROM reports WHERE report_key IN (SELECT unnest(?))", [keys]
    ).fetchall()
    return {k: s for k, s in rows}


def insert_report(
    con: duckdb.DuckDBPyConnection,
    report: Report,
    *,
    raw_xml: bytes,
    origin: str,
    member: str | None,
    run_id: str,
) -> None:
    """Insert one report, its raw XML and its records (no commit)."""
    import pyarrow as pa

    batch = report.records
    n = len(batch)
    pol = report.policy
    con.execute(
        "INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            report.key, report.org_name, report.org_email, report.org_extra_contact, report.report_id,
            pol.domain, report.begin, report.end, int((report.end - report.begin).total_seconds()),
            pol.adkim, pol.aspf, pol.p, pol.sp, pol.np, pol.pct, pol.fo, pol.testing, pol.discovery_method,
            report.format, report.xml_schema, report.xml_namespace, report.generator, report.errors,
            report.parser, origin, member, hashlib.sha256(raw_xml).hexdigest(), n, batch.messages,
            run_id, now_utc(),
        ],
    )
    con.execute(
        "INSERT INTO report_raw VALUES (?, ?)", [report.key, gzip.compress(raw_xml, compresslevel=6, mtime=0)]
    )
    if n == 0:
        return
    cols = batch.columns()
    cols["report_key"] = [report.key] * n
    cols["ingest_run_id"] = [run_id] * n
    schema = _records_schema()
    table = pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in schema}, schema=schema)
    con.register("_dl_new_records", table)
    try:
        con.execute(f"INSERT INTO records ({RECORD_COLUMNS}) SELECT {RECORD_COLUMNS} FROM _dl_new_records")
    finally:
        con.unregister("_dl_new_records")


def insert_items(con: duckdb.DuckDBPyConnection, run_id: str, items: list[ItemResult]) -> None:
    if not items:
        return
    seen = now_utc()
    con.executemany(
        "INSERT INTO ingest_items (run_id, seen_at, origin_kind, origin, member, sha256, size_bytes, mailbox, "
        "uidvalidity, uid, message_id, outcome, report_kind, report_key, domain, records, messages, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            [run_id, seen, i.origin_kind, i.origin, i.member, i.sha256, i.size_bytes, i.mailbox,
             i.uidvalidity, i.uid, i.message_id, i.outcome, i.kind, i.report_key, i.domain,
             i.records, i.messages, i.reason]
            for i in items
        ],
    )


def upsert_ip_facts(con: duckdb.DuckDBPyConnection, ips: set[str], enricher: OfflineEnricher) -> int:
    """Add offline facts for IPs not yet in ip_info; return how many were added."""
    if not ips:
        return 0
    known = {
        r[0]
        for r in con.execute("SELECT ip FROM ip_info WHERE ip IN (SELECT unnest(?))", [sorted(ips)]).fetchall()
    }
    new = sorted(ips - known)
    if not new:
        return 0
    import pyarrow as pa

    facts = [enricher.lookup(ip) for ip in new]
    stamp = now_utc()
    table = pa.table({
        "ip": [f.ip for f in facts],
        "country": [f.country for f in facts],
        "asn": pa.array([f.asn for f in facts], type=pa.int32()),
        "as_name": [f.as_name for f in facts],
        "as_domain": [f.as_domain for f in facts],
        "service_name": [f.service_name for f in facts],
        "service_type": [f.service_type for f in facts],
        "service_source": [f.service_source for f in facts],
        "offline_resolved_at": pa.array([stamp] * len(facts), type=pa.timestamp("us", tz="UTC")),
    })
    con.register("_dl_new_ips", table)
    try:
        con.execute(
            "INSERT INTO ip_info (ip, country, asn, as_name, as_domain, service_name, service_type, "
            "service_source, offline_resolved_at) SELECT ip, country, asn, as_name, as_domain, service_name, "
            "service_type, service_source, offline_resolved_at FROM _dl_new_ips"
        )
    finally:
        con.unregister("_dl_new_ips")
    return len(new)
