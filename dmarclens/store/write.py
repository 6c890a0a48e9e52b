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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dmarclens.core import bigfile
from dmarclens.core.models import ItemResult, RecordBatch, Report, RunSummary
from dmarclens.core.net import network_of

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


@runtime_checkable
class IpFactSource(Protocol):
    """What the store needs to look up offline facts of new IPs
    (``dmarclens.enrich.offline.OfflineEnricher`` is one; it also has a
    faster ``lookup_columns`` for many IPs at once, used when present)."""

    def lookup(self, ip: str) -> Any: ...


def _records_schema() -> pa.Schema:
    from dmarclens.core.arrow import import_pyarrow

    pa = import_pyarrow()

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
    from dmarclens.core.version import __version__

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


@dataclass
class NewReport:
    """One report to store, with its raw XML (or that XML already gzipped).

    ``raw_gz`` and ``raw_sha256`` may be filled where the report was parsed
    (a worker process), so the single writer does not compress or hash.
    """

    report: Report
    origin: str
    member: str | None = None
    raw_xml: bigfile.Buffer | None = None
    raw_gz: bytes | None = None
    raw_sha256: str | None = None
    key: str | None = None  # report.key when the caller already has it (it is a sha256 per access)

    def report_key(self) -> str:
        if self.key is None:
            self.key = self.report.key
        return self.key

    def sha256(self) -> str:
        if self.raw_sha256 is None:
            self.raw_sha256 = hashlib.sha256(self.raw_xml or b"").hexdigest()
        return self.raw_sha256

    def gzipped(self) -> bytes:
        return self.raw_gz if self.raw_gz is not None else gzip_raw(self.raw_xml or b"")


def gzip_raw(raw_xml: bigfile.Buffer) -> bytes:
    """Compress the raw report for ``report_raw``.

    Level 3: half the CPU of zlib's default 6 (0.044 s instead of 0.095 s on
    a 32 MB report, 0.2 s less per 10,000 small ones) for ~7 % more bytes on
    typical small reports (0.090 of the XML instead of 0.084) and 1.0 MB
    instead of 0.7 MB for that 32 MB one. Ingest time is what users wait on;
    report_raw is read only to show a raw report.
    """
    return gzip.compress(raw_xml, compresslevel=RAW_GZIP_LEVEL, mtime=0)


RAW_GZIP_LEVEL = 3


def hash_and_gzip(raw_xml: bigfile.Buffer, *, sha256: str | None = None) -> tuple[str, bytes]:
    """(sha256, ``gzip_raw``) of the raw XML for ``report_raw``; a mapped big
    file (``dmarclens.core.bigfile``) in one pass, a window at a time, so it is
    never resident whole. ``sha256``: the hash when the caller knows it."""
    if bigfile.is_mapped(raw_xml):
        return bigfile.gzip_stream(raw_xml, RAW_GZIP_LEVEL)
    return sha256 or hashlib.sha256(raw_xml).hexdigest(), gzip_raw(raw_xml)


def insert_report(
    con: duckdb.DuckDBPyConnection,
    report: Report,
    *,
    raw_xml: bigfile.Buffer,
    origin: str,
    member: str | None,
    run_id: str,
) -> None:
    """Insert one report, its raw XML and its records (no commit)."""
    insert_reports(con, [NewReport(report, origin, member, raw_xml=raw_xml)], run_id=run_id)


def insert_reports(con: duckdb.DuckDBPyConnection, items: list[NewReport], *, run_id: str) -> None:
    """Insert several reports, their raw XML and records with a few bulk INSERTs (no commit).

    Why in bulk: DuckDB's cost is per statement (~1 ms), so 500 small reports
    written one by one cost more than parsing them. Here each table gets one
    Arrow-backed INSERT per batch, and records go in Arrow batches of up to
    ``core.records.CHUNK_ROWS`` rows whatever the number of reports.
    """
    from dmarclens.core.arrow import gc_paused

    if not items:
        return
    with gc_paused():  # many short-lived objects, no cycles: see core.arrow.gc_paused
        _insert_reports(con, items, run_id)


def _insert_reports(con: duckdb.DuckDBPyConnection, items: list[NewReport], run_id: str) -> None:
    from dmarclens.core.arrow import import_pyarrow

    pa = import_pyarrow()

    from dmarclens.core.records import record_batches_for

    stamp = now_utc()
    reports = [i.report for i in items]
    keys = [i.report_key() for i in items]
    pols = [r.policy for r in reports]
    string, stamp_type = pa.string(), pa.timestamp("us", tz="UTC")
    table = pa.table({
        "report_key": pa.array(keys, string),
        "org_name": pa.array([r.org_name for r in reports], string),
        "org_email": pa.array([r.org_email for r in reports], string),
        "org_extra_contact": pa.array([r.org_extra_contact for r in reports], string),
        "report_id": pa.array([r.report_id for r in reports], string),
        "domain": pa.array([p.domain for p in pols], string),
        "begin_ts": pa.array([r.begin for r in reports], stamp_type),
        "end_ts": pa.array([r.end for r in reports], stamp_type),
        "span_seconds": pa.array([int((r.end - r.begin).total_seconds()) for r in reports], pa.int64()),
        "adkim": pa.array([p.adkim for p in pols], string),
        "aspf": pa.array([p.aspf for p in pols], string),
        "p": pa.array([p.p for p in pols], string),
        "sp": pa.array([p.sp for p in pols], string),
        "np": pa.array([p.np for p in pols], string),
        "pct": pa.array([p.pct for p in pols], pa.int32()),
        "fo": pa.array([p.fo for p in pols], string),
        "testing": pa.array([p.testing for p in pols], string),
        "discovery_method": pa.array([p.discovery_method for p in pols], string),
        "format": pa.array([r.format for r in reports], string),
        "xml_schema": pa.array([r.xml_schema for r in reports], string),
        "xml_namespace": pa.array([r.xml_namespace for r in reports], string),
        "generator": pa.array([r.generator for r in reports], string),
        "reporter_errors": pa.array([list(r.errors) for r in reports], pa.list_(string)),
        "parser": pa.array([r.parser for r in reports], string),
        "origin": pa.array([i.origin for i in items], string),
        "origin_member": pa.array([i.member for i in items], string),
        "raw_sha256": pa.array([i.sha256() for i in items], string),
        "record_count": pa.array([len(r.records) for r in reports], pa.int32()),
        "message_count": pa.array([r.records.messages for r in reports], pa.int64()),
        "ingest_run_id": pa.array([run_id] * len(items), string),
        "ingested_at": pa.array([stamp] * len(items), stamp_type),
    })
    _insert_arrow(con, "reports", table)
    raw = pa.table({
        "report_key": pa.array(keys, string),
        "xml_gz": pa.array([i.gzipped() for i in items], pa.binary()),
    })
    _insert_arrow(con, "report_raw", raw)
    # One INSERT over a stream of every batch, not one INSERT per batch: for
    # a 200,000-record report DuckDB then holds +33 MB while the transaction
    # is open instead of +75 MB, and a batch is read (from memory, or from a
    # spill file) only when DuckDB wants it.
    reader = _one_stream(record_batches_for(zip(keys, (r.records for r in reports), strict=True)))
    if reader is None:
        return
    con.register("_dl_new_records", reader)
    try:
        con.execute(
            f"INSERT INTO records ({RECORD_COLUMNS}) SELECT {RECORD_COLUMNS.replace('ingest_run_id', '?')} "
            "FROM _dl_new_records",
            [run_id],
        )
    finally:
        con.unregister("_dl_new_records")
    # The batches it read are freed, but mimalloc keeps their pages until asked.
    import_pyarrow().default_memory_pool().release_unused()


def _one_stream(parts: Iterator[pa.RecordBatch | pa.Table]) -> pa.RecordBatchReader | None:
    """Batches and tables (all in ``records`` column order) as one reader."""
    from dmarclens.core.arrow import import_pyarrow

    arrow = import_pyarrow()
    first = next(parts, None)
    if first is None:
        return None
    schema = first.schema

    def batches() -> Iterator[pa.RecordBatch]:
        for part in chain([first], parts):
            for batch in part.to_batches() if isinstance(part, arrow.Table) else (part,):
                yield batch if batch.schema == schema else batch.cast(schema)

    return arrow.RecordBatchReader.from_batches(schema, batches())


def _insert_arrow(con: duckdb.DuckDBPyConnection, table_name: str, data: pa.Table) -> None:
    """INSERT an Arrow table whose column names match the target's."""
    cols = ", ".join(data.column_names)
    con.register("_dl_new_rows", data)
    try:
        con.execute(f"INSERT INTO {table_name} ({cols}) SELECT {cols} FROM _dl_new_rows")
    finally:
        con.unregister("_dl_new_rows")


def source_ips(batch: RecordBatch) -> Iterable[str]:
    """Distinct source IPs of a report (without a per-row list when the batch is columnar)."""
    unique = getattr(batch, "unique_source_ips", None)
    return unique() if unique is not None else batch.source_ip


def insert_items(con: duckdb.DuckDBPyConnection, run_id: str, items: list[ItemResult]) -> None:
    """Append the ledger rows of one batch (one Arrow-backed INSERT, not one per item)."""
    if not items:
        return
    from dmarclens.core.arrow import import_pyarrow

    pa = import_pyarrow()

    string, int64 = pa.string(), pa.int64()
    n = len(items)
    table = pa.table({
        "run_id": pa.array([run_id] * n, string),
        "seen_at": pa.array([now_utc()] * n, pa.timestamp("us", tz="UTC")),
        "origin_kind": pa.array([i.origin_kind for i in items], string),
        "origin": pa.array([i.origin for i in items], string),
        "member": pa.array([i.member for i in items], string),
        "sha256": pa.array([i.sha256 for i in items], string),
        "size_bytes": pa.array([i.size_bytes for i in items], int64),
        "mailbox": pa.array([i.mailbox for i in items], string),
        "uidvalidity": pa.array([i.uidvalidity for i in items], int64),
        "uid": pa.array([i.uid for i in items], int64),
        "message_id": pa.array([i.message_id for i in items], string),
        "outcome": pa.array([i.outcome for i in items], string),
        "report_kind": pa.array([i.kind for i in items], string),
        "report_key": pa.array([i.report_key for i in items], string),
        "domain": pa.array([i.domain for i in items], string),
        "records": pa.array([i.records for i in items], pa.int32()),
        "messages": pa.array([i.messages for i in items], int64),
        "reason": pa.array([i.reason for i in items], string),
    })
    _insert_arrow(con, "ingest_items", table)


def ip_facts_table(ips: Iterable[str], enricher: IpFactSource) -> pa.Table:
    """Offline facts for ``ips`` as an Arrow table in ``ip_info``'s column names
    (without the timestamp, which the writer stamps).

    Parse workers call this for the IPs of the reports they parsed, so the
    lookups run in parallel and the single writer only inserts.
    """
    from dmarclens.core.arrow import gc_paused, import_pyarrow

    pa = import_pyarrow()
    string = pa.string()
    with gc_paused():
        lookup_columns = getattr(enricher, "lookup_columns", None)
        if lookup_columns is not None:
            cols = lookup_columns(list(ips))
        else:
            facts = [enricher.lookup(ip) for ip in ips]
            cols = {name: [getattr(f, name) for f in facts] for name in (
                "ip", "country", "asn", "as_name", "as_domain", "service_name", "service_type", "service_source")}
        # The /24 or /48 too: traffic classification needs it for every new
        # IP, and here it is computed where the report was parsed.
        cols["network"] = [network_of(ip) for ip in cols["ip"]]
        return pa.table({
            name: pa.array(cols[name], pa.int32() if name == "asn" else string)
            for name in ("ip", "country", "asn", "as_name", "as_domain", "service_name", "service_type",
                         "service_source", "network")
        })


_FACT_COLUMNS = "ip, country, asn, as_name, as_domain, service_name, service_type, service_source, network"


def upsert_ip_facts(
    con: duckdb.DuckDBPyConnection,
    ips: Iterable[str],
    enricher: IpFactSource | Callable[[], IpFactSource],
    *,
    facts: Sequence[pa.Table] = (),
) -> int:
    """Add offline facts for IPs not yet in ip_info; return how many were added.

    ``facts`` are tables from ``ip_facts_table`` made where the reports were
    parsed, each listing an IP once; only IPs they do not cover are looked up
    here. ``enricher`` may be a function returning one, so the MMDB is not
    even opened when the facts cover everything. New IPs are looked up in
    slices of ``IP_SLICE`` so a report with 200,000 new addresses never holds
    200,000 fact objects.
    """
    from dmarclens.core.arrow import import_pyarrow

    pa = import_pyarrow()
    stamp = now_utc()
    added = 0
    for given in facts:
        # One table at a time, each holding an IP once: a later table's IPs
        # that an earlier one added are dropped by the anti-join, which costs
        # far less memory than deduplicating all of them together.
        con.register("_dl_given_facts", given)
        try:
            added += con.execute(
                f"INSERT INTO ip_info ({_FACT_COLUMNS}, offline_resolved_at) "
                f"SELECT {_FACT_COLUMNS}, ? FROM _dl_given_facts f ANTI JOIN ip_info USING (ip)",
                [stamp],
            ).fetchall()[0][0]
        finally:
            con.unregister("_dl_given_facts")
    if facts:
        pa.default_memory_pool().release_unused()
    ip_list = list(ips)  # IPs the given facts do not cover are dropped by the anti-join below
    if not ip_list:
        return added
    con.register("_dl_seen_ips", pa.table({"ip": pa.array(ip_list, pa.string())}))
    try:
        rows = con.execute("SELECT ip FROM _dl_seen_ips ANTI JOIN ip_info USING (ip) ORDER BY ip").fetchall()
    finally:
        con.unregister("_dl_seen_ips")
    del ip_list
    new = [r[0] for r in rows]
    del rows
    if not new:
        return added
    source = enricher if isinstance(enricher, IpFactSource) else enricher()  # opened only when needed
    for start in range(0, len(new), IP_SLICE):
        table = ip_facts_table(new[start: start + IP_SLICE], source)
        con.register("_dl_new_ips", table)
        try:
            con.execute(f"INSERT INTO ip_info ({_FACT_COLUMNS}, offline_resolved_at) "
                        f"SELECT {_FACT_COLUMNS}, ? FROM _dl_new_ips", [stamp])
        finally:
            con.unregister("_dl_new_ips")
    return added + len(new)


IP_SLICE = 10_000
"""IPs looked up and inserted per step in ``upsert_ip_facts``."""
