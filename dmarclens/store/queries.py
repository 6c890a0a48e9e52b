"""The query layer: every question the dashboard and the CLI ask, in one place.

UI code never holds SQL. Each function takes an open connection plus plain
filter values and returns a pandas DataFrame (or a scalar), so the dashboard,
the CLI and analysts' notebooks share one tested implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
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
    return [r[0] for r in con.execute("SELECT DISTINCT domain FROM reports ORDER BY 1").fetchall()]


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
            FROM reports WHERE {where} GROUP BY domain ORDER BY domain""",
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
            FROM reports WHERE {where} GROUP BY 1 ORDER BY reports DESC""",
        params,
    )


def report_list(con: duckdb.DuckDBPyConnection, f: Filters, limit: int = 1000) -> pd.DataFrame:
    where, params = f.where("CAST(begin_ts AS DATE)")
    return _df(
        con,
        f"""SELECT report_key, org_name AS reporter, report_id, domain, begin_ts, end_ts,
                   record_count AS records, message_count AS messages, p AS policy, format, origin
            FROM reports WHERE {where} ORDER BY begin_ts DESC, org_name LIMIT {int(limit)}""",
        params,
    )


def report_records(con: duckdb.DuckDBPyConnection, report_key: str) -> pd.DataFrame:
    return _df(
        con,
        """SELECT day, source_ip, service_name AS service, country, count, disposition, dmarc_pass,
                  policy_dkim, policy_spf, header_from, envelope_from, envelope_to,
                  list_transform(dkim, x -> x.domain || '/' || coalesce(x.selector, '') || '=' || x.result) AS dkim,
                  list_transform(spf, x -> x.domain || '=' || x.result) AS spf
           FROM v_records WHERE report_key = ? ORDER BY count DESC""",
        [report_key],
    )


def report_raw_xml(con: duckdb.DuckDBPyConnection, report_key: str) -> str | None:
    import gzip

    row = con.execute("SELECT xml_gz FROM report_raw WHERE report_key = ?", [report_key]).fetchone()
    if not row:
        return None
    return gzip.decompress(row[0]).decode("utf-8", errors="replace")
