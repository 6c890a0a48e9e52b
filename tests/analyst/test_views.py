"""v_sources and v_reports: present, documented as stable, and right."""

from __future__ import annotations

from pathlib import Path

import duckdb

from dmarclens.store.db import connect, migration_files, open_db
from tests.analyst.scenario import (
    AS_OF,
    DAYS,
    FORWARDER,
    SENDGRID,
    SPOOF_RU,
    YAHOO_LAST,
    day,
    report_specs,
)

STABLE = ("v_records", "v_daily", "v_sources", "v_reports")


def test_stable_views_exist_with_comments_on_view_and_every_column(world_con: duckdb.DuckDBPyConnection) -> None:
    comments = dict(world_con.execute(
        "SELECT view_name, comment FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal"
    ).fetchall())
    for view in STABLE:
        assert (comments.get(view) or "").startswith("Stable view:"), view
    bare = world_con.execute(
        """SELECT table_name || '.' || column_name FROM duckdb_columns()
           WHERE table_name IN ('v_sources', 'v_reports') AND (comment IS NULL OR comment = '')"""
    ).fetchall()
    assert bare == []
    counts = dict(world_con.execute(
        "SELECT table_name, count(*) FROM duckdb_columns() WHERE table_name IN ('v_sources', 'v_reports') GROUP BY 1"
    ).fetchall())
    assert counts["v_sources"] >= 25 and counts["v_reports"] >= 25


def test_v_sources_one_row_per_domain_and_ip_with_exact_totals(world_con: duckdb.DuckDBPyConnection) -> None:
    n, messages = world_con.execute("SELECT count(*), sum(messages) FROM v_sources").fetchone()
    pairs, total = world_con.execute(
        "SELECT count(DISTINCT (domain, source_ip)), sum(count) FROM v_records"
    ).fetchone()
    assert (n, messages) == (pairs, total)
    cur = world_con.execute("SELECT * FROM v_sources WHERE domain = 'example.com' AND source_ip = ?", [SENDGRID])
    row = dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))
    assert row["service_name"] == "SendGrid" and row["country"] == "US" and row["asn"] == 11377
    assert (row["first_seen"], row["last_seen"], row["days_seen"], row["reports"], row["reporters"]) == (
        day(0), AS_OF, DAYS, DAYS, 1)
    assert (row["messages"], row["passed"], row["failed"]) == (40 * DAYS, 40 * DAYS, 0)
    assert (row["pass_rate"], row["dkim_aligned_rate"], row["spf_aligned_rate"]) == (1.0, 0.0, 1.0)
    assert row["envelope_from_domains"] == ["em123.example.com"]
    rejected = world_con.execute(
        "SELECT failed, quarantined_or_rejected, pass_rate FROM v_sources WHERE domain = 'example.net' AND source_ip = ?",
        [SPOOF_RU],
    ).fetchone()
    assert rejected == (2 * DAYS, 2 * DAYS, 0.0)


def test_v_reports_counts_and_policy(world_con: duckdb.DuckDBPyConnection) -> None:
    assert world_con.execute("SELECT count(*) FROM v_reports").fetchone()[0] == len(report_specs())
    assert world_con.execute(
        "SELECT count(*), max(end_ts)::DATE FROM v_reports WHERE reporter = 'Yahoo'"
    ).fetchone() == (YAHOO_LAST + 1, day(YAHOO_LAST))
    assert world_con.execute(
        "SELECT count(*) FROM v_reports WHERE passed + failed <> messages OR days <> 1"
    ).fetchone()[0] == 0
    last = world_con.execute(
        """SELECT policy_p, records, messages, passed, failed, sources, round(pass_rate, 4), format
           FROM v_reports WHERE domain = 'example.com' AND reporter = 'google.com' AND begin_ts::DATE = ?""",
        [AS_OF],
    ).fetchone()
    # M365 1000 + news 8 + new tenant 20 + SendGrid 40 + relay 15 pass; spoofer 5 + lookalikes 7 + 2 fail.
    assert last == ("none", 8, 1097, 1083, 14, 6, round(1083 / 1097, 4), "rfc7489")
    assert world_con.execute(
        "SELECT DISTINCT policy_p FROM v_reports WHERE domain = 'example.net'"
    ).fetchall() == [("reject",)]


def test_analyst_views_survive_a_redefined_v_records(world_db: Path) -> None:
    """0002 may CREATE OR REPLACE v_records; v_sources/v_reports read base tables, so they do not change."""
    con = connect(world_db)
    try:
        assert 5 in {v for v, _, _ in migration_files()}
        assert con.execute("SELECT 5 IN (SELECT version FROM schema_migrations)").fetchone()[0]
        before = con.execute("SELECT sum(messages), count(*) FROM v_sources").fetchone()
        con.execute("CREATE OR REPLACE VIEW v_records AS SELECT 1 AS something_else")
        assert con.execute("SELECT sum(messages), count(*) FROM v_sources").fetchone() == before
        assert con.execute("SELECT count(*) FROM v_reports").fetchone()[0] == len(report_specs())
    finally:
        con.close()


def test_v_sources_traffic_class_is_the_class_carrying_most_messages(world_db: Path) -> None:
    """Classes come from `dmarclens enrich`; here they are set by hand so the answer is known."""
    with open_db(world_db) as con:
        assert con.execute(
            "SELECT traffic_class, traffic_classes, unclassified = messages FROM v_sources "
            "WHERE domain = 'example.com' AND source_ip = ?", [FORWARDER]
        ).fetchone() == (None, [], True)
        # The forwarder's Microsoft rows (10/day) are 'forwarded'; one day of them is 'spoofed'.
        con.execute("UPDATE records SET traffic_class = 'forwarded' WHERE source_ip = ?", [FORWARDER])
        con.execute("UPDATE records SET traffic_class = 'spoofed' WHERE source_ip = ? AND day = ?",
                    [FORWARDER, AS_OF])
        con.execute("UPDATE ip_info SET network = '192.0.2.0/24' WHERE ip = ?", [FORWARDER])
        row = con.execute(
            "SELECT traffic_class, traffic_classes, unclassified, source_network FROM v_sources "
            "WHERE domain = 'example.com' AND source_ip = ?", [FORWARDER]
        ).fetchone()
        assert row == ("forwarded", ["forwarded", "spoofed"], 0, "192.0.2.0/24")
