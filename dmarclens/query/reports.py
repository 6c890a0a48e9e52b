"""The reports themselves and the ingest ledger: report lists and details, raw XML,
ingest runs, rejected inputs, reporter activity, and the reports kept apart
or unverified by the forged-report defence (docs/security.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

from dmarclens.query.filters import Filters, frame
from dmarclens.store.sql import counted_reports, has_table


def report_list(con: duckdb.DuckDBPyConnection, f: Filters, limit: int = 1000) -> pd.DataFrame:
    where, params = f.where("CAST(begin_ts AS DATE)")
    return frame(
        con,
        f"""SELECT report_key, org_name AS reporter, report_id, domain, begin_ts, end_ts,
                   record_count AS records, message_count AS messages, p AS policy, format, origin
            FROM {counted_reports(con)} WHERE {where} ORDER BY begin_ts DESC, org_name LIMIT {int(limit)}""",
        params,
    )


def report_raw_xml(con: duckdb.DuckDBPyConnection, report_key: str) -> str | None:
    import gzip

    row = con.execute("SELECT xml_gz FROM report_raw WHERE report_key = ?", [report_key]).fetchone()
    if not row:
        return None
    return gzip.decompress(row[0]).decode("utf-8", errors="replace")


def reports_page(
    con: duckdb.DuckDBPyConnection, f: Filters, reporter: str | None = None, limit: int = 1000
) -> pd.DataFrame:
    """Report list for the Reports page, optionally for one reporter."""
    where, params = f.where("CAST(begin_ts AS DATE)")
    if reporter is not None:
        where += " AND org_name = ?"
        params.append(reporter)
    return frame(
        con,
        f"""SELECT report_key, org_name AS reporter, report_id, domain, begin_ts, end_ts,
                   record_count AS records, message_count AS messages, p AS policy, format
            FROM {counted_reports(con)} WHERE {where} ORDER BY begin_ts DESC, org_name, report_id LIMIT {int(limit)}""",
        params,
    )


def report_meta(con: duckdb.DuckDBPyConnection, report_key: str) -> dict[str, Any]:
    """Every stored field of one report (for its detail view)."""
    cur = con.execute("SELECT * FROM reports WHERE report_key = ?", [report_key])
    row = cur.fetchone()
    if row is None:
        return {}
    return dict(zip([d[0] for d in cur.description or []], row, strict=False))


def report_detail_records(con: duckdb.DuckDBPyConnection, report_key: str) -> pd.DataFrame:
    """One report's rows with DKIM/SPF results flattened to readable text."""
    return frame(
        con,
        """SELECT r.day, r.source_ip, i.service_name AS service, i.country, r.count, r.disposition,
                  r.dmarc_pass, r.policy_dkim, r.policy_spf, r.header_from, r.envelope_from, r.envelope_to,
                  array_to_string(list_transform(r.dkim, lambda x: coalesce(x.domain, '?') || ' / '
                      || coalesce(x.selector, '-') || ': ' || coalesce(x.result, '?')), '; ') AS dkim,
                  array_to_string(list_transform(r.spf, lambda x: coalesce(x.domain, '?') || ' ('
                      || coalesce(x.scope, '-') || '): ' || coalesce(x.result, '?')), '; ') AS spf,
                  array_to_string(list_transform(r.override_reasons, lambda x: coalesce(x.type, '?')
                      || coalesce(': ' || x.comment, '')), '; ') AS overrides
           FROM records r LEFT JOIN ip_info i ON i.ip = r.source_ip
           WHERE r.report_key = ? ORDER BY r.day, r.count DESC, r.source_ip""",
        [report_key],
    )


def reports_by_keys(con: duckdb.DuckDBPyConnection, report_keys: list[str]) -> pd.DataFrame:
    """The reports behind a piece of evidence, newest first."""
    return frame(
        con,
        """SELECT report_key, org_name AS reporter, report_id, domain, begin_ts, end_ts, message_count AS messages
           FROM reports WHERE report_key IN (SELECT unnest(?)) ORDER BY begin_ts DESC, org_name LIMIT 500""",
        [list(report_keys or [])],
    )


def ingest_runs(con: duckdb.DuckDBPyConnection, limit: int = 50) -> pd.DataFrame:
    """Latest ingest/fetch runs and what each did."""
    return frame(
        con,
        f"""SELECT started_at, finished_at, command, source_kind, hostname, items_seen, stored, duplicates,
                   rejected, ignored, records, messages, run_id
            FROM ingest_runs ORDER BY started_at DESC LIMIT {int(limit)}""",
    )


def rejected_items(con: duckdb.DuckDBPyConnection, limit: int = 500) -> pd.DataFrame:
    """Inputs that were not stored as aggregate data, newest first, with the reason."""
    return frame(
        con,
        f"""SELECT seen_at, outcome, report_kind, origin, member, reason, size_bytes, sha256, run_id
            FROM ingest_items WHERE outcome IN ('rejected', 'ignored')
            ORDER BY seen_at DESC, item_id DESC LIMIT {int(limit)}""",
    )


def rejection_reasons(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Why inputs were turned away, most frequent first."""
    return frame(
        con,
        """SELECT outcome, reason, count(*) AS items, max(seen_at) AS last_seen
           FROM ingest_items WHERE outcome IN ('rejected', 'ignored')
           GROUP BY outcome, reason ORDER BY items DESC, last_seen DESC LIMIT 200""",
    )


def ingest_item_counts(con: duckdb.DuckDBPyConnection, since: Any = None) -> dict[str, int]:
    """Items per outcome (stored, duplicate, rejected, ignored), optionally since a timestamp."""
    where, params = ("seen_at >= ?", [since]) if since is not None else ("TRUE", [])
    rows = con.execute(f"SELECT outcome, count(*) FROM ingest_items WHERE {where} GROUP BY 1", params).fetchall()
    return {str(k): int(v) for k, v in rows}


def reporter_activity(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Per reporter and domain: how often it reports and how long it has been silent.

    Silence is measured against the newest report in the database (not the
    wall clock), so a stopped reporter stands out even in an old archive; the
    page says separately when the whole feed has gone quiet.
    """
    dwhere, dparams = Filters(domains=f.domains).where()
    return frame(
        con,
        f"""WITH r AS (
                SELECT org_name, domain, end_ts,
                       end_ts - lag(end_ts) OVER (PARTITION BY org_name, domain ORDER BY end_ts) AS gap
                FROM {counted_reports(con)} WHERE {dwhere}),
            newest AS (SELECT max(end_ts) AS t FROM reports)
            SELECT org_name AS reporter, domain, count(*) AS reports, min(end_ts) AS first_report,
                   max(end_ts) AS last_report,
                   round(epoch(median(gap)) / 3600.0, 1) AS typical_gap_hours,
                   round(epoch(any_value(newest.t) - max(end_ts)) / 86400.0, 1) AS silent_days
            FROM r, newest GROUP BY org_name, domain ORDER BY silent_days DESC, reporter, domain""",
        dparams,
    )


def report_trust_summary(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Counts of reports per mail verdict, plus how many are hidden as not the owner's."""
    out = {"verified": 0, "unverified": 0, "not_mail": 0, "not_checked": 0, "hidden": 0}
    if not has_table(con, "report_trust"):
        return out
    for verdict, n in con.execute("SELECT mail_auth, count(*) FROM v_report_trust GROUP BY 1").fetchall():
        out[verdict] = int(n)
    row = con.execute("SELECT count(*) FROM v_report_trust WHERE NOT owned").fetchone()
    out["hidden"] = int(row[0]) if row else 0
    return out


def hidden_reports(con: duckdb.DuckDBPyConnection, limit: int = 500) -> pd.DataFrame | None:
    """Reports kept apart because their domain is not the owner's: what someone sent, counted nowhere."""
    if not has_table(con, "report_trust"):
        return None
    return frame(
        con,
        f"""SELECT v.report_key, v.domain, v.org_name, v.report_id, v.begin_ts, v.end_ts,
                   v.message_count AS messages, v.mail_auth, v.auth_detail, p.origin, p.ingested_at
            FROM v_report_trust v JOIN reports p USING (report_key)
            WHERE NOT v.owned ORDER BY p.ingested_at DESC, v.report_key LIMIT {int(limit)}""",
    )


def unverified_reports(con: duckdb.DuckDBPyConnection, limit: int = 500) -> pd.DataFrame | None:
    """Counted reports whose mail did not authenticate as their reporter (possible forgeries)."""
    if not has_table(con, "report_trust"):
        return None
    return frame(
        con,
        f"""SELECT v.report_key, v.domain, v.org_name, v.report_id, v.begin_ts, v.message_count AS messages,
                   v.auth_method, v.auth_domain, v.auth_detail, p.origin
            FROM v_report_trust v JOIN reports p USING (report_key)
            WHERE v.owned AND v.mail_auth = 'unverified'
            ORDER BY v.begin_ts DESC, v.report_key LIMIT {int(limit)}""",
    )
