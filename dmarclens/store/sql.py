"""SQL fragments and catalog checks that every reader of the database shares.

The dashboard's query layer (``dmarclens.query``), detection and the saved
queries all group sources by the same network ranges, name them the same way
and count only the reports that may steer decisions; each rule is written
here once. Tables that later migrations or stages add are looked up with
``has_table``/``has_column`` so readers work on any database.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb


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
