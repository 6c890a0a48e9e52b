"""The query layer: every question the dashboard and the CLI ask, in one place.

UI code never holds SQL. Each function takes an open connection plus plain
filter values and returns a pandas DataFrame (or a scalar), so the dashboard,
the CLI and analysts' notebooks share one tested implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pandas as pd


@dataclass(frozen=True)
class Filters:
    """The filters every dashboard page shares (and keeps in the URL)."""

    domains: tuple[str, ...] = ()
    start: date | None = None
    end: date | None = None

    def where(self, day_col: str = "day", domain_col: str = "domain") -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.domains:
            clauses.append(f"{domain_col} IN (SELECT unnest(?))")
            params.append(list(self.domains))
        if self.start:
            clauses.append(f"{day_col} >= ?")
            params.append(self.start)
        if self.end:
            clauses.append(f"{day_col} <= ?")
            params.append(self.end)
        return (" AND ".join(clauses) or "TRUE"), params


def _df(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


def domains(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(f"SELECT DISTINCT domain FROM {counted_reports(con)} ORDER BY 1").fetchall()]


def day_bounds(con: duckdb.DuckDBPyConnection) -> tuple[date | None, date | None]:
    row = con.execute("SELECT min(day), max(day) FROM records").fetchone()
    return (row[0], row[1]) if row else (None, None)


def daily(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Messages, pass/fail and dispositions per domain per day."""
    where, params = f.where()
    return _df(con, f"SELECT * FROM v_daily WHERE {where} ORDER BY domain, day", params)


def kpis(con: duckdb.DuckDBPyConnection, f: Filters) -> dict[str, Any]:
    """Headline numbers for the Overview page."""
    where, params = f.where()
    row = con.execute(
        f"""SELECT coalesce(sum(messages), 0), coalesce(sum(passed), 0), coalesce(sum(dkim_aligned), 0),
                   coalesce(sum(spf_aligned), 0), coalesce(sum(reports), 0)
            FROM v_daily WHERE {where}""",
        params,
    ).fetchone()
    messages, passed, dkim, spf, reports = (int(x) for x in row)
    src_where, src_params = f.where("r.day", "p.domain")
    sources = con.execute(
        f"SELECT count(DISTINCT source_ip) FROM records r JOIN reports p USING (report_key) WHERE {src_where}",
        src_params,
    ).fetchone()[0]
    return {
        "messages": messages,
        "pass_rate": passed / messages if messages else None,
        "dkim_rate": dkim / messages if messages else None,
        "spf_rate": spf / messages if messages else None,
        "failed": messages - passed,
        "sources": int(sources),
        "reports": reports,
    }


def published_policy(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """The most recent policy each domain published, as receivers saw it."""
    where, params = f.where("CAST(begin_ts AS DATE)")
    return _df(
        con,
        f"""SELECT domain, arg_max(p, end_ts) AS p, arg_max(sp, end_ts) AS sp, arg_max(pct, end_ts) AS pct,
                   arg_max(adkim, end_ts) AS adkim, arg_max(aspf, end_ts) AS aspf, max(end_ts) AS last_report
            FROM {counted_reports(con)} WHERE {where} GROUP BY domain ORDER BY domain""",
        params,
    )


def top_sources(con: duckdb.DuckDBPyConnection, f: Filters, limit: int = 200) -> pd.DataFrame:
    """Sources by volume with service, country and pass/fail."""
    where, params = f.where()
    return _df(
        con,
        f"""SELECT source_ip, any_value(service_name) AS service, any_value(service_type) AS service_type,
                   any_value(country) AS country, any_value(as_name) AS as_name, any_value(reverse_dns) AS reverse_dns,
                   sum(count) AS messages,
                   sum(count) FILTER (WHERE dmarc_pass) AS passed,
                   sum(count) FILTER (WHERE NOT dmarc_pass) AS failed,
                   round(100.0 * coalesce(sum(count) FILTER (WHERE dmarc_pass), 0) / sum(count), 1) AS pass_pct,
                   min(day) AS first_seen, max(day) AS last_seen,
                   string_agg(DISTINCT domain, ', ') AS domains
            FROM v_records WHERE {where}
            GROUP BY source_ip ORDER BY messages DESC LIMIT {int(limit)}""",
        params,
    )


def services(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Volume and pass rate per sending service (unknown services grouped by AS)."""
    where, params = f.where()
    return _df(
        con,
        f"""SELECT coalesce(service_name, as_name, 'Unknown') AS service,
                   sum(count) AS messages,
                   coalesce(sum(count) FILTER (WHERE dmarc_pass), 0) AS passed,
                   coalesce(sum(count) FILTER (WHERE NOT dmarc_pass), 0) AS failed,
                   count(DISTINCT source_ip) AS ips
            FROM v_records WHERE {where} GROUP BY 1 ORDER BY messages DESC""",
        params,
    )


def countries(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    where, params = f.where()
    return _df(
        con,
        f"""SELECT coalesce(country, '??') AS country, sum(count) AS messages,
                   coalesce(sum(count) FILTER (WHERE NOT dmarc_pass), 0) AS failed
            FROM v_records WHERE {where} GROUP BY 1 ORDER BY messages DESC""",
        params,
    )


def reporters(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    where, params = f.where("CAST(begin_ts AS DATE)")
    return _df(
        con,
        f"""SELECT org_name AS reporter, count(*) AS reports, sum(message_count) AS messages,
                   min(begin_ts) AS first_report, max(end_ts) AS last_report,
                   string_agg(DISTINCT format, ', ') AS formats
            FROM {counted_reports(con)} WHERE {where} GROUP BY 1 ORDER BY reports DESC""",
        params,
    )


def report_list(con: duckdb.DuckDBPyConnection, f: Filters, limit: int = 1000) -> pd.DataFrame:
    where, params = f.where("CAST(begin_ts AS DATE)")
    return _df(
        con,
        f"""SELECT report_key, org_name AS reporter, report_id, domain, begin_ts, end_ts,
                   record_count AS records, message_count AS messages, p AS policy, format, origin
            FROM {counted_reports(con)} WHERE {where} ORDER BY begin_ts DESC, org_name LIMIT {int(limit)}""",
        params,
    )


def report_records(con: duckdb.DuckDBPyConnection, report_key: str) -> pd.DataFrame:
    return _df(
        con,
        """SELECT day, source_ip, service_name AS service, country, count, disposition, dmarc_pass,
                  policy_dkim, policy_spf, header_from, envelope_from, envelope_to,
                  [d.domain || '/' || coalesce(d.selector, '') || '=' || d.result FOR d IN dkim] AS dkim,
                  [s.domain || '=' || s.result FOR s IN spf] AS spf
           FROM v_records WHERE report_key = ? ORDER BY count DESC""",
        [report_key],
    )


def report_raw_xml(con: duckdb.DuckDBPyConnection, report_key: str) -> str | None:
    import gzip

    row = con.execute("SELECT xml_gz FROM report_raw WHERE report_key = ?", [report_key]).fetchone()
    if not row:
        return None
    return gzip.decompress(row[0]).decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------
# Dashboard queries (issue 6).
#
# Pages read the rollup maintained at ingest (migration 0004) so they stay
# under a second at 10 M records; when a database predates the rollup the same
# questions are answered from `records` directly (slower, same answers).
# Tables that other stages add later (enrichment, detection) are looked up
# with has_table()/has_column() so every page reads cleanly without them.
# ---------------------------------------------------------------------------

_ROLLUP = "rollup_source_daily"
_ROLLUP_FROM_RECORDS = """(
    SELECT p.domain, r.day, r.source_ip, r.count AS messages,
           CASE WHEN r.dmarc_pass THEN r.count ELSE 0 END AS passed,
           CASE WHEN r.dkim_aligned THEN r.count ELSE 0 END AS dkim_aligned,
           CASE WHEN r.spf_aligned THEN r.count ELSE 0 END AS spf_aligned,
           CASE WHEN r.disposition = 'quarantine' THEN r.count ELSE 0 END AS disp_quarantine,
           CASE WHEN r.disposition = 'reject' THEN r.count ELSE 0 END AS disp_reject,
           CASE WHEN NOT r.dmarc_pass AND len(coalesce(r.override_reasons, [])) > 0
                THEN r.count ELSE 0 END AS failed_overridden,
           1 AS records
    FROM records r JOIN reports p USING (report_key))"""

SERVICE_EXPR = "coalesce(nullif(i.service_name, ''), nullif(i.as_name, ''), 'Unknown network')"
"""How a source IP is named when grouped: known service, else its network (AS) owner."""


def range_expr(col: str = "source_ip") -> str:
    """SQL for the network an IP belongs to: its /24 (IPv4) or /48 (IPv6).

    Providers rotate addresses inside their ranges, so a range is the layer a
    person reasons about between "the provider" and "one IP". Done in SQL (no
    extension needed) so ranges can be grouped where the data is.
    """
    head = f"split_part({col}, '::', 1)"
    tail = f"split_part({col}, '::', 2)"
    head_l = f"(CASE WHEN {head} = '' THEN []::VARCHAR[] ELSE string_split({head}, ':') END)"
    tail_l = f"(CASE WHEN {tail} = '' THEN []::VARCHAR[] ELSE string_split({tail}, ':') END)"
    full = (
        f"(CASE WHEN contains({col}, '::') THEN {head_l} || "
        f"list_transform(range(greatest(0, 8 - len({head_l}) - len({tail_l}))), lambda x: '0') || {tail_l} "
        f"ELSE string_split({col}, ':') END)"
    )
    v6 = (
        f"regexp_replace(array_to_string(list_transform(({full})[1:3], "
        f"lambda g: coalesce(nullif(ltrim(lower(g), '0'), ''), '0')), ':'), '(:0)+$', '') || '::/48'"
    )
    return (
        f"(CASE WHEN contains({col}, ':') THEN {v6} "
        f"ELSE regexp_replace({col}, '\\.[0-9]+$', '.0') || '/24' END)"
    )


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """True when a table or view exists: pages show later stages' data only when it is there."""
    row = con.execute(
        """SELECT count(*) FROM (
               SELECT table_name AS n FROM duckdb_tables() WHERE schema_name = 'main'
               UNION ALL SELECT view_name FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal)
           WHERE n = ?""",
        [name],
    ).fetchone()
    return bool(row and row[0])


def columns_of(con: duckdb.DuckDBPyConnection, name: str) -> set[str]:
    """Column names of a table or view (empty when it does not exist)."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = ?", [name]
    ).fetchall()
    return {r[0] for r in rows}


def has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return column in columns_of(con, table)


def _rollup(con: duckdb.DuckDBPyConnection) -> str:
    return _ROLLUP if has_table(con, _ROLLUP) else _ROLLUP_FROM_RECORDS


def data_bounds(con: duckdb.DuckDBPyConnection) -> tuple[date | None, date | None]:
    """First and last day with data (from the rollup: cheap at any size)."""
    row = con.execute(f"SELECT min(day), max(day) FROM {_rollup(con)}").fetchone()
    return (row[0], row[1]) if row else (None, None)


def overview_daily(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Per domain and day: messages, DMARC pass/fail, aligned DKIM/SPF and dispositions."""
    where, params = f.where()
    return _df(
        con,
        f"""SELECT domain, day, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                   sum(messages)::BIGINT - sum(passed)::BIGINT AS failed,
                   sum(dkim_aligned)::BIGINT AS dkim_aligned, sum(spf_aligned)::BIGINT AS spf_aligned,
                   sum(messages)::BIGINT - sum(disp_quarantine)::BIGINT - sum(disp_reject)::BIGINT AS disp_none,
                   sum(disp_quarantine)::BIGINT AS disp_quarantine, sum(disp_reject)::BIGINT AS disp_reject
            FROM {_rollup(con)} WHERE {where} GROUP BY domain, day ORDER BY domain, day""",
        params,
    )


def totals(con: duckdb.DuckDBPyConnection, f: Filters) -> dict[str, Any]:
    """Headline numbers for a filter: volume, pass rates, failures, distinct sources."""
    where, params = f.where()
    row = con.execute(
        f"""SELECT coalesce(sum(messages)::BIGINT, 0), coalesce(sum(passed)::BIGINT, 0), coalesce(sum(dkim_aligned)::BIGINT, 0),
                   coalesce(sum(spf_aligned)::BIGINT, 0), coalesce(sum(disp_quarantine)::BIGINT, 0),
                   coalesce(sum(disp_reject)::BIGINT, 0), count(DISTINCT source_ip), count(DISTINCT day)
            FROM {_rollup(con)} WHERE {where}""",
        params,
    ).fetchone()
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
    return _df(
        con,
        f"""WITH t AS (
                SELECT domain, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                       sum(dkim_aligned)::BIGINT AS dkim_aligned, sum(spf_aligned)::BIGINT AS spf_aligned,
                       sum(disp_quarantine)::BIGINT AS quarantined, sum(disp_reject)::BIGINT AS rejected,
                       count(DISTINCT source_ip) AS sources
                FROM {_rollup(con)} WHERE {where} GROUP BY domain),
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
            FROM {_rollup(con)} WHERE {where} GROUP BY source_ip)
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
        services = _df(
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
        ranges = _df(
            con,
            f"""SELECT ip_range, service, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                       sum(failed)::BIGINT AS failed, sum(passed)::BIGINT / sum(messages)::BIGINT AS pass_rate,
                       count(*) AS ips, string_agg(DISTINCT country, ', ' ORDER BY country) AS countries,
                       min(first_in_range) AS first_day, max(last_in_range) AS last_day
                FROM {tmp} WHERE {swhere}
                GROUP BY ip_range, service ORDER BY messages DESC, ip_range LIMIT {int(limit)}""",
            sparams,
        )
        countries = _df(
            con,
            f"""SELECT country, sum(messages)::BIGINT AS messages, sum(failed)::BIGINT AS failed,
                       sum(passed)::BIGINT / sum(messages)::BIGINT AS pass_rate, count(*) AS ips
                FROM {tmp} GROUP BY country ORDER BY messages DESC""",
        )
        iwhere = [swhere] + (["ip_range = ?"] if ip_range is not None else [])
        iparams = sparams + ([ip_range] if ip_range is not None else [])
        info_cols = columns_of(con, "ip_info")
        fcrdns = "i.fcrdns" if "fcrdns" in info_cols else "NULL::BOOLEAN"
        ips = _df(
            con,
            f"""WITH top AS (SELECT * FROM {tmp} WHERE {' AND '.join(iwhere)}
                             ORDER BY messages DESC, source_ip LIMIT {int(limit)}),
                     seen AS (SELECT source_ip, min(day) AS first_seen, max(day) AS last_seen FROM {_rollup(con)}
                              WHERE {dwhere} AND source_ip IN (SELECT source_ip FROM top) GROUP BY source_ip),
                     doms AS (SELECT source_ip, string_agg(DISTINCT domain, ', ' ORDER BY domain) AS domains
                              FROM {_rollup(con)}
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
                    WHERE source_ip NOT IN (SELECT source_ip FROM {_rollup(con)}
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
    return _df(
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
    return _df(
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
    return _df(
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
    return _df(
        con,
        f"""SELECT domain, day, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                   sum(messages)::BIGINT - sum(passed)::BIGINT AS failed
            FROM {_rollup(con)} WHERE {where} AND source_ip = ? GROUP BY domain, day ORDER BY day, domain""",
        params + [ip],
    )


def source_reports(con: duckdb.DuckDBPyConnection, f: Filters, ip: str, limit: int = 500) -> pd.DataFrame:
    """The reports that mention one IP, newest first, with what each said about it."""
    where, params = f.where("r.day", "p.domain")
    return _df(
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
    return _df(
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


def readiness_sources(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Per domain and sending service: what enforcement would have done to its mail.

    Failing mail is what p=quarantine/reject acts on; failed_overridden is the
    part receivers already let through as forwarded or mailing-list mail.
    """
    where, params = f.where()
    return _df(
        con,
        f"""WITH s AS (
                SELECT domain, source_ip, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                       sum(failed_overridden)::BIGINT AS failed_overridden,
                       sum(disp_quarantine)::BIGINT AS quarantined, sum(disp_reject)::BIGINT AS rejected
                FROM {_rollup(con)} WHERE {where} GROUP BY domain, source_ip)
            SELECT s.domain, {SERVICE_EXPR} AS service, any_value(i.service_type) AS service_type,
                   sum(s.messages)::BIGINT AS messages, sum(s.passed)::BIGINT AS passed,
                   sum(s.messages - s.passed)::BIGINT AS failed, sum(s.failed_overridden)::BIGINT AS failed_overridden,
                   sum(s.quarantined)::BIGINT AS quarantined, sum(s.rejected)::BIGINT AS rejected, count(*) AS ips
            FROM s LEFT JOIN ip_info i ON i.ip = s.source_ip
            GROUP BY s.domain, service ORDER BY s.domain, messages DESC""",
        params,
    )


def days_with_data(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Days with at least one report row, per domain (how much evidence a verdict rests on)."""
    where, params = f.where()
    return _df(
        con,
        f"SELECT domain, count(DISTINCT day) AS days FROM {_rollup(con)} WHERE {where} GROUP BY domain",
        params,
    )


def posture(con: duckdb.DuckDBPyConnection, domains: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """The latest DNS posture check per domain (None when `dmarclens posture` never ran)."""
    if not has_table(con, "posture_checks"):
        return None
    where, params = ("domain IN (SELECT unnest(?))", [list(domains)]) if domains else ("TRUE", [])
    return _df(
        con,
        f"""SELECT * FROM posture_checks WHERE {where}
            QUALIFY row_number() OVER (PARTITION BY domain ORDER BY checked_at DESC, check_id DESC) = 1
            ORDER BY domain""",
        params,
    )


def posture_spf_includes(con: duckdb.DuckDBPyConnection, check_ids: tuple[int, ...]) -> pd.DataFrame | None:
    """SPF includes of posture checks: the platforms the domain authorises, used or not."""
    if not has_table(con, "posture_spf_includes"):
        return None
    return _df(
        con,
        """SELECT domain, include, platform, multi_tenant, depth, status, messages, last_seen, unused
           FROM posture_spf_includes WHERE check_id IN (SELECT unnest(?))
           ORDER BY domain, multi_tenant DESC, messages DESC NULLS LAST, include""",
        [list(check_ids)],
    )


# --- reports -------------------------------------------------------------------

def reports_page(
    con: duckdb.DuckDBPyConnection, f: Filters, reporter: str | None = None, limit: int = 1000
) -> pd.DataFrame:
    """Report list for the Reports page, optionally for one reporter."""
    where, params = f.where("CAST(begin_ts AS DATE)")
    if reporter is not None:
        where += " AND org_name = ?"
        params.append(reporter)
    return _df(
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
    return _df(
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


# --- ingest health -------------------------------------------------------------

def ingest_runs(con: duckdb.DuckDBPyConnection, limit: int = 50) -> pd.DataFrame:
    """Latest ingest/fetch runs and what each did."""
    return _df(
        con,
        f"""SELECT started_at, finished_at, command, source_kind, hostname, items_seen, stored, duplicates,
                   rejected, ignored, records, messages, run_id
            FROM ingest_runs ORDER BY started_at DESC LIMIT {int(limit)}""",
    )


def rejected_items(con: duckdb.DuckDBPyConnection, limit: int = 500) -> pd.DataFrame:
    """Inputs that were not stored as aggregate data, newest first, with the reason."""
    return _df(
        con,
        f"""SELECT seen_at, outcome, report_kind, origin, member, reason, size_bytes, sha256, run_id
            FROM ingest_items WHERE outcome IN ('rejected', 'ignored')
            ORDER BY seen_at DESC, item_id DESC LIMIT {int(limit)}""",
    )


def rejection_reasons(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Why inputs were turned away, most frequent first."""
    return _df(
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
    return _df(
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


# --- anomalies (detection stage; present once migration 0003 is applied) --------

ANOMALY_RELATIONS = ("v_anomalies", "anomalies")
SEVERITY_RANK = {"critical": 5, "high": 4, "medium": 3, "low": 2, "info": 1}


def anomaly_relation(con: duckdb.DuckDBPyConnection) -> str | None:
    for name in ANOMALY_RELATIONS:
        if has_table(con, name):
            return name
    return None


def _status_col(cols: set[str]) -> str | None:
    return next((c for c in ("status", "state") if c in cols), None)


def _id_col(cols: set[str]) -> str:
    return next((c for c in ("anomaly_id", "id") if c in cols), "id")


def anomalies(con: duckdb.DuckDBPyConnection, f: Filters, status: str | None = "open") -> pd.DataFrame | None:
    """Detector findings, most severe first (None when detection has never run on this file)."""
    name = anomaly_relation(con)
    if name is None:
        return None
    cols = columns_of(con, name)
    clauses: list[str] = []
    params: list[Any] = []
    if f.domains and "domain" in cols:
        clauses.append("domain IN (SELECT unnest(?))")
        params.append(list(f.domains))
    if "last_day" in cols and f.start:
        clauses.append("last_day >= ?")
        params.append(f.start)
    if "first_day" in cols and f.end:
        clauses.append("first_day <= ?")
        params.append(f.end)
    scol = _status_col(cols)
    if status and scol:
        if status == "open":
            clauses.append(f"coalesce({scol}, 'open') IN ('open', 'new')")
        elif status == "all":
            pass
        else:
            clauses.append(f"{scol} = ?")
            params.append(status)
    where = " AND ".join(clauses) or "TRUE"
    rank = "CASE lower(severity) " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in SEVERITY_RANK.items()) + " ELSE 0 END"
    if "severity_rank" in cols:
        rank = "severity_rank"
    order = [f"{rank} DESC"] if "severity" in cols else []
    order += [c + " DESC" for c in ("last_day", "messages") if c in cols]
    return _df(con, f"SELECT * FROM {name} WHERE {where} ORDER BY {', '.join(order) or '1'} LIMIT 1000", params)


def open_anomaly_counts(con: duckdb.DuckDBPyConnection, f: Filters) -> dict[str, int] | None:
    """Open anomalies per domain (None when detection has not run)."""
    df = anomalies(con, f, status="open")
    if df is None:
        return None
    if df.empty or "domain" not in df.columns:
        return {}
    return {str(k): int(v) for k, v in df.groupby("domain").size().items()}


_IDENTITY_FILTERS = {
    "service": f"{SERVICE_EXPR} = ?",
    "asn": "i.asn = TRY_CAST(? AS INTEGER)",
    "as_name": "i.as_name = ?",
    "base_domain": "i.base_domain = ?",
    "envelope_from": "r.envelope_from = ?",
    "header_from": "r.header_from = ?",
    "dkim_domain": "list_contains(list_transform(r.dkim, lambda x: x.domain), ?)",
    "dkim_selector": "list_contains(list_transform(r.dkim, lambda x: x.selector), ?)",
    "ip_range": f"{range_expr('r.source_ip')} = ?",
    "network": f"{range_expr('r.source_ip')} = ?",
    "reporter": "p.org_name = ?",
    "envelope_to": "r.envelope_to = ?",
}


def identity_series(
    con: duckdb.DuckDBPyConnection,
    domain: str,
    identity: dict[str, Any],
    start: date,
    end: date,
    ips: list[str] | None = None,
) -> pd.DataFrame:
    """Daily messages (passed/failed) of the mail matching one anomaly's identity.

    The identity is the layer the detector says explains the finding (service,
    envelope-from, DKIM selector ...); unknown keys are ignored and, when no
    key is usable, the anomaly's IPs stand in for it.
    """
    clauses = ["p.domain = ?", "r.day BETWEEN ? AND ?"]
    params: list[Any] = [domain, start, end]
    used = 0
    for key, value in (identity or {}).items():
        sql = _IDENTITY_FILTERS.get(key)
        if sql is None or value in (None, "", []):
            continue
        clauses.append(sql)
        params.append(str(value))
        used += 1
    if not used and ips:
        clauses.append("r.source_ip IN (SELECT unnest(?))")
        params.append(list(ips))
    return _df(
        con,
        f"""SELECT r.day, sum(r.count)::BIGINT AS messages,
                   coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass)::BIGINT, 0) AS passed,
                   coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass)::BIGINT, 0) AS failed
            FROM records r JOIN reports p USING (report_key) LEFT JOIN ip_info i ON i.ip = r.source_ip
            WHERE {' AND '.join(clauses)} GROUP BY r.day ORDER BY r.day""",
        params,
    )


def acknowledge_anomaly(
    con: duckdb.DuckDBPyConnection, anomaly_id: str, *, note: str | None, by: str | None
) -> bool:
    """The dashboard's one write: record an acknowledgement, in one short transaction.

    Uses the detection stage's anomaly_acks table (migration 0003); the
    acknowledgement keeps the kind, domain, identity and severity so repeats
    of the same finding stay quiet (see v_anomalies). Returns False when the
    anomaly does not exist. The caller opens a writable connection just for
    this and closes it at once, so an ingest waits at most one transaction.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        row = con.execute(
            "SELECT kind, domain, identity_key, severity_rank FROM anomalies WHERE anomaly_id = ?", [anomaly_id]
        ).fetchone()
        if row is None:
            con.execute("ROLLBACK")
            return False
        con.execute(
            "INSERT INTO anomaly_acks (anomaly_id, kind, domain, identity_key, severity_rank, acked_at, acked_by, note) "
            "VALUES (?, ?, ?, ?, ?, now(), ?, ?)",
            [anomaly_id, row[0], row[1], row[2], row[3], by, note],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return True


def anomaly_by_id(con: duckdb.DuckDBPyConnection, anomaly_id: str) -> dict[str, Any] | None:
    """One anomaly with its status (from v_anomalies), or None."""
    name = anomaly_relation(con)
    if name is None:
        return None
    cur = con.execute(f"SELECT * FROM {name} WHERE {_id_col(columns_of(con, name))} = ?", [anomaly_id])
    row = cur.fetchone()
    return dict(zip([d[0] for d in cur.description or []], row, strict=False)) if row else None


def reports_by_keys(con: duckdb.DuckDBPyConnection, report_keys: list[str]) -> pd.DataFrame:
    """The reports behind a piece of evidence, newest first."""
    return _df(
        con,
        """SELECT report_key, org_name AS reporter, report_id, domain, begin_ts, end_ts, message_count AS messages
           FROM reports WHERE report_key IN (SELECT unnest(?)) ORDER BY begin_ts DESC, org_name LIMIT 500""",
        [list(report_keys or [])],
    )


# --- sender identity (schema 0002): traffic classes over time, posture details ----------


def traffic_class_daily(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame | None:
    """Messages per day and traffic class (a stacked chart); rows not classified yet are "unclassified"."""
    if not has_column(con, "records", "traffic_class"):
        return None
    where, params = f.where("r.day", "p.domain")
    return _df(
        con,
        f"""SELECT r.day, coalesce(r.traffic_class, 'unclassified') AS traffic_class,
                   sum(r.count)::BIGINT AS messages
            FROM records r JOIN reports p USING (report_key) WHERE {where}
            GROUP BY ALL ORDER BY r.day, traffic_class""",
        params,
    )


def traffic_class_reasons(
    con: duckdb.DuckDBPyConnection, f: Filters, traffic_class: str | None = None, limit: int = 200
) -> pd.DataFrame | None:
    """Why mail got its class: messages per class and rule (docs/identity.md), with the top sources."""
    if not has_column(con, "records", "class_reason"):
        return None
    where, params = f.where("r.day", "p.domain")
    if traffic_class:
        where += " AND r.traffic_class = ?"
        params = params + [traffic_class]
    return _df(
        con,
        f"""WITH x AS (
                SELECT r.traffic_class, split_part(r.class_reason, ' ', 1) AS rule, r.class_reason,
                       r.source_ip, sum(r.count) AS n
                FROM records r JOIN reports p USING (report_key)
                WHERE {where} AND r.traffic_class IS NOT NULL GROUP BY ALL)
            SELECT traffic_class, rule, sum(n)::BIGINT AS messages, count(DISTINCT source_ip) AS ips,
                   string_agg(DISTINCT class_reason, '; ') AS details,
                   list(source_ip ORDER BY n DESC)[1:5] AS top_sources
            FROM x GROUP BY traffic_class, rule ORDER BY messages DESC LIMIT {int(limit)}""",
        params,
    )


def posture_dkim_selectors(con: duckdb.DuckDBPyConnection, check_ids: tuple[int, ...]) -> pd.DataFrame | None:
    """DKIM selectors the reports show, with what DNS says about each key, for posture checks."""
    if not has_table(con, "posture_dkim_selectors"):
        return None
    return _df(
        con,
        """SELECT domain, selector, status, key_type, key_bits, messages, last_seen, record
           FROM posture_dkim_selectors WHERE check_id IN (SELECT unnest(?))
           ORDER BY domain, last_seen DESC NULLS LAST, selector""",
        [list(check_ids)],
    )


def posture_history(con: duckdb.DuckDBPyConnection, domain: str, limit: int = 100) -> pd.DataFrame | None:
    """Every posture check of one domain, newest first: did the policy get stronger over time?"""
    if not has_table(con, "posture_checks"):
        return None
    return _df(
        con,
        f"""SELECT check_id, checked_at, policy_strength, p, sp, np, pct, dmarc_status, spf_status,
                   spf_lookups, spf_all, len(findings) AS findings
            FROM posture_checks WHERE domain = ? ORDER BY checked_at DESC, check_id DESC LIMIT {int(limit)}""",
        [domain],
    )


# ---------------------------------------------------------------------- forged-report defence (0007)
# Reports about domains not in the owner's list keep their records in
# foreign_records, so every count above already leaves them out; these
# functions show them, and the mail verdicts, on purpose (dmarclens/security.py).


def trusted_report_keys_sql(con: duckdb.DuckDBPyConnection, *, ignore_unverified: bool = False) -> str:
    """SQL selecting the report keys that may steer decisions, for ``report_key IN (...)``.

    Always excludes reports stored apart as not the owner's; with
    ``ignore_unverified`` also those whose mail failed authentication
    (``mail_auth = 'unverified'``). Files and pre-0007 reports stay in: there
    was no mail to check. Works on databases without 0007 (all reports).
    """
    if not has_table(con, "report_trust"):
        return "SELECT report_key FROM reports"
    cond = "NOT owned" + (" OR mail_auth = 'unverified'" if ignore_unverified else "")
    return (
        "SELECT report_key FROM reports WHERE report_key NOT IN ("
        "SELECT report_key FROM report_trust WHERE " + cond + ")"
    )


def counted_reports(con: duckdb.DuckDBPyConnection, *, ignore_unverified: bool = False) -> str:
    """A FROM-clause stand-in for ``reports`` holding only the reports that count.

    Drop-in for queries that read ``reports`` directly (domain lists, report
    lists, reporter counts): ``f"SELECT ... FROM {counted_reports(con)} WHERE ..."``.
    Reports stored apart as not the owner's are left out, and with
    ``ignore_unverified`` also those whose mail failed authentication.
    """
    keys = trusted_report_keys_sql(con, ignore_unverified=ignore_unverified)
    if keys == "SELECT report_key FROM reports":
        return "reports"
    return f"(SELECT * FROM reports WHERE report_key IN ({keys})) AS reports"


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
    return _df(
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
    return _df(
        con,
        f"""SELECT v.report_key, v.domain, v.org_name, v.report_id, v.begin_ts, v.message_count AS messages,
                   v.auth_method, v.auth_domain, v.auth_detail, p.origin
            FROM v_report_trust v JOIN reports p USING (report_key)
            WHERE v.owned AND v.mail_auth = 'unverified'
            ORDER BY v.begin_ts DESC, v.report_key LIMIT {int(limit)}""",
    )


# --- detection context (schema 0003): one identity's days against its baseline -----------


def identity_baseline(
    con: duckdb.DuckDBPyConnection,
    domain: str,
    identity: dict[str, Any],
    start: date,
    end: date,
    ips: list[str] | None = None,
) -> pd.DataFrame:
    """Daily DMARC-passing and failing messages of one identity, with the baseline it is judged by.

    ``baseline`` is the median of the same weekday over the previous eight
    weeks (the shape dmarclens detect expects; detect itself keeps it per
    reporter and sums the reporters present each day, so its number for a
    day with a missing reporter is lower). Days without mail are filled with
    0 so a chart shows silences. For the anomaly page: "what was normal, and
    what happened".
    """
    series = identity_series(con, domain, identity, start - timedelta(days=56), end, ips)
    if series.empty:
        return series.assign(baseline=[])
    first = min(pd_date(x) for x in series["day"])
    con.register("_identity_series", series)
    try:
        return _df(
            con,
            """WITH days AS (SELECT unnest(generate_series(?::DATE, ?::DATE, INTERVAL 1 DAY))::DATE AS day),
                    s AS (SELECT d.day, coalesce(x.passed, 0) AS passed, coalesce(x.failed, 0) AS failed,
                                 coalesce(x.messages, 0) AS messages
                          FROM days d LEFT JOIN _identity_series x ON x.day::DATE = d.day),
                    b AS (SELECT *, median(passed) OVER (PARTITION BY dayofweek(day) ORDER BY day
                                                         ROWS BETWEEN 8 PRECEDING AND 1 PRECEDING) AS baseline
                          FROM s)
               SELECT day, messages, passed, failed, baseline FROM b WHERE day >= ? ORDER BY day""",
            [first, end, start],
        )
    finally:
        con.unregister("_identity_series")


def pd_date(value: Any) -> date:
    """A DATE value from DuckDB or pandas as a plain date."""
    return value.date() if hasattr(value, "date") and callable(value.date) else value
