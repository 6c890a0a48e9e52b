"""Who sends as the owner's domains: volumes, pass rates, sources, ranges, services,
traffic classes and lookalikes (the Overview and Sources pages).

Pages read the rollup maintained at ingest (migration 0004) so they stay
under a second at 10 M records; when a database predates the rollup the same
questions are answered from ``records`` directly (``store.rollups.relation``:
slower, same answers).
"""
from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

from dmarclens.query.filters import Filters, frame
from dmarclens.store import rollups
from dmarclens.store.sql import SERVICE_EXPR, columns_of, counted_reports, has_column, has_table, range_expr


def domains(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(f"SELECT DISTINCT domain FROM {counted_reports(con)} ORDER BY 1").fetchall()]


def reporters(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    where, params = f.where("CAST(begin_ts AS DATE)")
    return frame(
        con,
        f"""SELECT org_name AS reporter, count(*) AS reports, sum(message_count) AS messages,
                   min(begin_ts) AS first_report, max(end_ts) AS last_report,
                   string_agg(DISTINCT format, ', ') AS formats
            FROM {counted_reports(con)} WHERE {where} GROUP BY 1 ORDER BY reports DESC""",
        params,
    )


def data_bounds(con: duckdb.DuckDBPyConnection) -> tuple[date | None, date | None]:
    """First and last day with data (from the rollup: cheap at any size)."""
    row = con.execute(f"SELECT min(day), max(day) FROM {rollups.relation(con)}").fetchone()
    return (row[0], row[1]) if row else (None, None)


def overview_daily(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Per domain and day: messages, DMARC pass/fail, aligned DKIM/SPF and dispositions."""
    where, params = f.where()
    return frame(
        con,
        f"""SELECT domain, day, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                   sum(messages)::BIGINT - sum(passed)::BIGINT AS failed,
                   sum(dkim_aligned)::BIGINT AS dkim_aligned, sum(spf_aligned)::BIGINT AS spf_aligned,
                   sum(messages)::BIGINT - sum(disp_quarantine)::BIGINT - sum(disp_reject)::BIGINT AS disp_none,
                   sum(disp_quarantine)::BIGINT AS disp_quarantine, sum(disp_reject)::BIGINT AS disp_reject
            FROM {rollups.relation(con)} WHERE {where} GROUP BY domain, day ORDER BY domain, day""",
        params,
    )


def totals(con: duckdb.DuckDBPyConnection, f: Filters) -> dict[str, Any]:
    """Headline numbers for a filter: volume, pass rates, failures, distinct sources."""
    where, params = f.where()
    row = con.execute(
        f"""SELECT coalesce(sum(messages)::BIGINT, 0), coalesce(sum(passed)::BIGINT, 0), coalesce(sum(dkim_aligned)::BIGINT, 0),
                   coalesce(sum(spf_aligned)::BIGINT, 0), coalesce(sum(disp_quarantine)::BIGINT, 0),
                   coalesce(sum(disp_reject)::BIGINT, 0), count(DISTINCT source_ip), count(DISTINCT day)
            FROM {rollups.relation(con)} WHERE {where}""",
        params,
    ).fetchall()[0]
    messages, passed, dkim, spf, quarantined, rejected, sources, days = (int(x) for x in row)
    rate = (lambda n: n / messages if messages else None)  # noqa: E731
    return {
        "messages": messages, "passed": passed, "failed": messages - passed,
        "pass_rate": rate(passed), "dkim_rate": rate(dkim), "spf_rate": rate(spf),
        "quarantined": quarantined, "rejected": rejected, "sources": sources, "days": days,
    }


def domain_summary(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """One row per domain: volume, pass rates, dispositions and the policy last published."""
    where, params = f.where()
    rwhere, rparams = f.where("CAST(begin_ts AS DATE)")
    return frame(
        con,
        f"""WITH t AS (
                SELECT domain, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                       sum(dkim_aligned)::BIGINT AS dkim_aligned, sum(spf_aligned)::BIGINT AS spf_aligned,
                       sum(disp_quarantine)::BIGINT AS quarantined, sum(disp_reject)::BIGINT AS rejected,
                       count(DISTINCT source_ip) AS sources
                FROM {rollups.relation(con)} WHERE {where} GROUP BY domain),
            pol AS (
                SELECT domain, count(*) AS reports, arg_max(p, end_ts) AS p, arg_max(sp, end_ts) AS sp,
                       arg_max(np, end_ts) AS np, arg_max(pct, end_ts) AS pct,
                       arg_max(adkim, end_ts) AS adkim, arg_max(aspf, end_ts) AS aspf,
                       max(end_ts) AS last_report
                FROM {counted_reports(con)} WHERE {rwhere} GROUP BY domain)
            SELECT domain, coalesce(t.messages, 0) AS messages,
                   t.passed / nullif(t.messages, 0) AS pass_rate,
                   t.dkim_aligned / nullif(t.messages, 0) AS dkim_rate,
                   t.spf_aligned / nullif(t.messages, 0) AS spf_rate,
                   coalesce(t.messages - t.passed, 0) AS failed,
                   coalesce(t.quarantined, 0) AS quarantined, coalesce(t.rejected, 0) AS rejected,
                   coalesce(t.sources, 0) AS sources, coalesce(pol.reports, 0) AS reports,
                   pol.p, pol.sp, pol.np, pol.pct, pol.adkim, pol.aspf, pol.last_report
            FROM t FULL OUTER JOIN pol USING (domain) ORDER BY messages DESC, domain""",
        params + rparams,
    )


def _source_ips_sql(con: duckdb.DuckDBPyConnection, where: str) -> str:
    """Per-IP totals of the window with the grouping keys (service, range, country); kept narrow on purpose."""
    return f"""
        WITH s AS (
            SELECT source_ip, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                   (sum(disp_quarantine) + sum(disp_reject))::BIGINT AS blocked,
                   min(day) AS first_in_range, max(day) AS last_in_range
            FROM {rollups.relation(con)} WHERE {where} GROUP BY source_ip)
        SELECT s.source_ip, {SERVICE_EXPR} AS service, i.service_type, {range_expr('s.source_ip')} AS ip_range,
               i.country, s.messages, s.passed, s.messages - s.passed AS failed, s.passed / s.messages AS pass_rate,
               s.blocked, s.first_in_range, s.last_in_range
        FROM s LEFT JOIN ip_info i ON i.ip = s.source_ip"""


NEW_LOOKBACK_DAYS = 90
"""An IP counts as new in a window when it sent nothing in the 90 days before it (bounded, so it stays fast)."""


def sources_overview(
    con: duckdb.DuckDBPyConnection,
    f: Filters,
    service: str | None = None,
    ip_range: str | None = None,
    limit: int = 500,
) -> dict[str, Any]:
    """Everything the Sources page lists, from one pass over the window.

    The per-IP aggregate of the window (with service, range and country) is
    built once into a temporary table; services, ranges, countries, the IP
    list and the "new IPs" count all come from it, so the page pays for the
    big scan once (well under a second at 10 M records, not several).
    ``service``/``ip_range`` narrow the range and IP lists (the drill-down).

    Returns ``services``, ``ranges``, ``ips`` (top ``limit`` by volume, with
    all-time first/last seen), ``countries`` (DataFrames) and ``new`` (IPs
    that sent in the window and not in the NEW_LOOKBACK_DAYS before it).
    """
    where, params = f.where()
    dwhere, dparams = Filters(domains=f.domains).where()
    tmp = "_dl_window_ips"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {tmp} AS {_source_ips_sql(con, where)}", params)
    try:
        services = frame(
            con,
            f"""SELECT service, any_value(service_type) AS service_type, sum(messages)::BIGINT AS messages,
                       sum(passed)::BIGINT AS passed, sum(failed)::BIGINT AS failed,
                       sum(passed)::BIGINT / sum(messages)::BIGINT AS pass_rate,
                       count(DISTINCT ip_range) AS ranges, count(*) AS ips,
                       string_agg(DISTINCT country, ', ' ORDER BY country) AS countries,
                       min(first_in_range) AS first_day, max(last_in_range) AS last_day
                FROM {tmp} GROUP BY service ORDER BY messages DESC, service""",
        )
        swhere = "service = ?" if service is not None else "TRUE"
        sparams = [service] if service is not None else []
        ranges = frame(
            con,
            f"""SELECT ip_range, service, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                       sum(failed)::BIGINT AS failed, sum(passed)::BIGINT / sum(messages)::BIGINT AS pass_rate,
                       count(*) AS ips, string_agg(DISTINCT country, ', ' ORDER BY country) AS countries,
                       min(first_in_range) AS first_day, max(last_in_range) AS last_day
                FROM {tmp} WHERE {swhere}
                GROUP BY ip_range, service ORDER BY messages DESC, ip_range LIMIT {int(limit)}""",
            sparams,
        )
        countries = frame(
            con,
            f"""SELECT country, sum(messages)::BIGINT AS messages, sum(failed)::BIGINT AS failed,
                       sum(passed)::BIGINT / sum(messages)::BIGINT AS pass_rate, count(*) AS ips
                FROM {tmp} GROUP BY country ORDER BY messages DESC""",
        )
        iwhere = [swhere] + (["ip_range = ?"] if ip_range is not None else [])
        iparams = sparams + ([ip_range] if ip_range is not None else [])
        info_cols = columns_of(con, "ip_info")
        fcrdns = "i.fcrdns" if "fcrdns" in info_cols else "NULL::BOOLEAN"
        ips = frame(
            con,
            f"""WITH top AS (SELECT * FROM {tmp} WHERE {' AND '.join(iwhere)}
                             ORDER BY messages DESC, source_ip LIMIT {int(limit)}),
                     seen AS (SELECT source_ip, min(day) AS first_seen, max(day) AS last_seen FROM {rollups.relation(con)}
                              WHERE {dwhere} AND source_ip IN (SELECT source_ip FROM top) GROUP BY source_ip),
                     doms AS (SELECT source_ip, string_agg(DISTINCT domain, ', ' ORDER BY domain) AS domains
                              FROM {rollups.relation(con)}
                              WHERE {where} AND source_ip IN (SELECT source_ip FROM top) GROUP BY source_ip)
                SELECT top.source_ip, top.service, top.service_type, top.ip_range, top.country, i.asn, i.as_name,
                       i.reverse_dns, i.base_domain, {fcrdns} AS fcrdns, top.messages, top.passed, top.failed,
                       top.pass_rate, top.blocked, doms.domains, seen.first_seen, seen.last_seen
                FROM top LEFT JOIN seen USING (source_ip) LEFT JOIN doms USING (source_ip)
                LEFT JOIN ip_info i ON i.ip = top.source_ip
                ORDER BY top.messages DESC, top.source_ip""",
            iparams + dparams + params,
        )
        new: dict[str, int] = {"ips": 0, "messages": 0}
        if f.start is not None:
            # New = sent in the window and nothing in the lookback before it.
            row = con.execute(
                f"""SELECT count(*), coalesce(sum(messages), 0)::BIGINT FROM {tmp}
                    WHERE source_ip NOT IN (SELECT source_ip FROM {rollups.relation(con)}
                                            WHERE {dwhere} AND day < ? AND day >= ?)""",
                dparams + [f.start, f.start - timedelta(days=NEW_LOOKBACK_DAYS)],
            ).fetchone()
            new = {"ips": int(row[0]), "messages": int(row[1])} if row else new
    finally:
        con.execute(f"DROP TABLE IF EXISTS {tmp}")
    return {"services": services, "ranges": ranges, "ips": ips, "countries": countries, "new": new}


def traffic_class_column(con: duckdb.DuckDBPyConnection) -> str | None:
    """Name of the per-record traffic-class column once enrichment (0002) adds it (else None)."""
    return "traffic_class" if has_column(con, "records", "traffic_class") else None


def traffic_classes(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame | None:
    """Messages per traffic class (authorized, forwarded, spoofed ...) when enrichment provides it.

    Rows not classified yet count as "unclassified" so the bars add up to the total.
    """
    col = traffic_class_column(con)
    if col is None:
        return None
    where, params = f.where("r.day", "p.domain")
    return frame(
        con,
        f"""SELECT coalesce(r.{col}, 'unclassified') AS traffic_class, sum(r.count)::BIGINT AS messages,
                   count(DISTINCT r.source_ip) AS ips
            FROM records r JOIN reports p USING (report_key) WHERE {where} GROUP BY 1 ORDER BY messages DESC""",
        params,
    )


def ip_traffic_classes(con: duckdb.DuckDBPyConnection, f: Filters, ips: list[str]) -> pd.DataFrame | None:
    """Traffic classes seen per IP (for the IPs on screen), largest class first."""
    col = traffic_class_column(con)
    if col is None or not ips:
        return None
    where, params = f.where("r.day", "p.domain")
    return frame(
        con,
        f"""WITH c AS (SELECT r.source_ip, coalesce(r.{col}, 'unclassified') AS cls, sum(r.count) AS n
                       FROM records r JOIN reports p USING (report_key)
                       WHERE {where} AND r.source_ip IN (SELECT unnest(?)) GROUP BY 1, 2)
            SELECT source_ip, string_agg(cls, ', ' ORDER BY n DESC) AS traffic_class FROM c GROUP BY 1""",
        params + [list(ips)],
    )


def lookalikes(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame | None:
    """Identifiers imitating the user's domains (enrichment's lookalike table), when present."""
    if not has_table(con, "identifier_lookalikes"):
        return None
    where, params = (
        ("owned_domain IN (SELECT unnest(?))", [list(f.domains)]) if f.domains else ("TRUE", [])
    )
    return frame(
        con,
        f"""SELECT identifier, identifier_kind, owned_domain, technique, detail, messages, first_seen, last_seen
            FROM identifier_lookalikes WHERE {where} ORDER BY messages DESC LIMIT 500""",
        params,
    )


def source_info(con: duckdb.DuckDBPyConnection, ip: str) -> dict[str, Any]:
    """Everything ip_info knows about one IP (columns added by later migrations included)."""
    cur = con.execute("SELECT * FROM ip_info WHERE ip = ?", [ip])
    row = cur.fetchone()
    if row is None:
        return {}
    return dict(zip([d[0] for d in cur.description or []], row, strict=False))


def source_history(con: duckdb.DuckDBPyConnection, f: Filters, ip: str) -> pd.DataFrame:
    """One IP's daily messages, passes and failures per domain."""
    where, params = f.where()
    return frame(
        con,
        f"""SELECT domain, day, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                   sum(messages)::BIGINT - sum(passed)::BIGINT AS failed
            FROM {rollups.relation(con)} WHERE {where} AND source_ip = ? GROUP BY domain, day ORDER BY day, domain""",
        params + [ip],
    )


def source_reports(con: duckdb.DuckDBPyConnection, f: Filters, ip: str, limit: int = 500) -> pd.DataFrame:
    """The reports that mention one IP, newest first, with what each said about it."""
    where, params = f.where("r.day", "p.domain")
    return frame(
        con,
        f"""SELECT p.report_key, p.org_name AS reporter, p.report_id, p.domain, min(r.day) AS day,
                   sum(r.count)::BIGINT AS messages,
                   coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass)::BIGINT, 0) AS passed,
                   string_agg(DISTINCT r.disposition, ', ') AS dispositions,
                   string_agg(DISTINCT r.header_from, ', ') AS header_from,
                   string_agg(DISTINCT r.envelope_from, ', ') AS envelope_from
            FROM records r JOIN reports p USING (report_key)
            WHERE {where} AND r.source_ip = ?
            GROUP BY ALL ORDER BY day DESC, reporter LIMIT {int(limit)}""",
        params + [ip],
    )


def source_identifiers(con: duckdb.DuckDBPyConnection, f: Filters, ip: str) -> pd.DataFrame:
    """What one IP sent as: header-from, envelope-from and DKIM signers, with pass/fail."""
    where, params = f.where("r.day", "p.domain")
    return frame(
        con,
        f"""SELECT r.header_from, r.envelope_from,
                   array_to_string(list_transform(r.dkim, lambda x: coalesce(x.domain, '?') || ' / '
                       || coalesce(x.selector, '-') || ': ' || coalesce(x.result, '?')), '; ') AS dkim,
                   array_to_string(list_transform(r.spf, lambda x: coalesce(x.domain, '?') || ': '
                       || coalesce(x.result, '?')), '; ') AS spf,
                   sum(r.count)::BIGINT AS messages,
                   coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass)::BIGINT, 0) AS passed
            FROM records r JOIN reports p USING (report_key)
            WHERE {where} AND r.source_ip = ?
            GROUP BY ALL ORDER BY messages DESC LIMIT 200""",
        params + [ip],
    )


def days_with_data(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Days with at least one report row, per domain (how much evidence a verdict rests on)."""
    where, params = f.where()
    return frame(
        con,
        f"SELECT domain, count(DISTINCT day) AS days FROM {rollups.relation(con)} WHERE {where} GROUP BY domain",
        params,
    )
