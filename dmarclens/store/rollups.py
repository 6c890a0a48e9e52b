"""Dashboard rollups (migration 0004), kept in step with `records` at ingest.

Why append-only partial sums instead of an upserted primary key: an ART index
over millions of (domain, day, ip) keys would have to be loaded by every
ingest process (hundreds of MB), which the ingest memory budget cannot pay.
Appending one aggregate row per (domain, day, source_ip) of each batch costs
one grouped INSERT in the batch's own transaction; readers SUM the partial
rows, and :func:`compact` folds them together when an operator wants to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dmarclens.store.db import transaction
from dmarclens.store.sql import has_table

if TYPE_CHECKING:
    import duckdb

ROLLUP_TABLE = "rollup_source_daily"

_AGGREGATE = """
SELECT p.domain, r.day, r.source_ip,
       sum(r.count),
       coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass), 0),
       coalesce(sum(r.count) FILTER (WHERE r.dkim_aligned), 0),
       coalesce(sum(r.count) FILTER (WHERE r.spf_aligned), 0),
       coalesce(sum(r.count) FILTER (WHERE r.disposition = 'quarantine'), 0),
       coalesce(sum(r.count) FILTER (WHERE r.disposition = 'reject'), 0),
       coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass AND len(coalesce(r.override_reasons, [])) > 0), 0),
       count(*)
FROM records r JOIN reports p USING (report_key)
"""


_FROM_RECORDS = """(
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


def relation(con: duckdb.DuckDBPyConnection) -> str:
    """What readers select from for per-(domain, day, source_ip) sums: the rollup, or
    the same rows computed from ``records`` when the database predates it (slower,
    same answers)."""
    return ROLLUP_TABLE if has_table(con, ROLLUP_TABLE) else _FROM_RECORDS


def _exists(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [ROLLUP_TABLE]
    ).fetchone()
    return bool(row and row[0])


def add_for_reports(con: duckdb.DuckDBPyConnection, report_keys: Sequence[str]) -> None:
    """Append the rollup rows for reports just inserted (caller owns the transaction).

    Called once per ingest batch, after its records are written and before the
    commit, so the rollup and the records become visible together.
    """
    if not report_keys or not _exists(con):
        return
    con.execute(
        f"INSERT INTO {ROLLUP_TABLE} {_AGGREGATE} WHERE r.report_key IN (SELECT unnest(?)) "
        "GROUP BY p.domain, r.day, r.source_ip",
        [list(report_keys)],
    )


def rebuild(con: duckdb.DuckDBPyConnection) -> int:
    """Recompute the rollup from `records` (after deletes or a bulk load); returns rows."""
    with transaction(con):
        con.execute(f"DELETE FROM {ROLLUP_TABLE}")
        # Day order keeps row groups day-clustered, so date filters skip most of the table.
        con.execute(f"INSERT INTO {ROLLUP_TABLE} {_AGGREGATE} GROUP BY p.domain, r.day, r.source_ip "
                    "ORDER BY r.day, p.domain")
    row = con.execute(f"SELECT count(*) FROM {ROLLUP_TABLE}").fetchone()
    return int(row[0]) if row else 0


def compact(con: duckdb.DuckDBPyConnection) -> int:
    """Fold partial rows into one row per (domain, day, source_ip); returns rows."""
    with transaction(con):
        con.execute(
            f"CREATE TEMP TABLE _rollup_compact AS SELECT domain, day, source_ip, sum(messages) AS messages, "
            "sum(passed) AS passed, sum(dkim_aligned) AS dkim_aligned, sum(spf_aligned) AS spf_aligned, "
            "sum(disp_quarantine) AS disp_quarantine, sum(disp_reject) AS disp_reject, "
            "sum(failed_overridden) AS failed_overridden, sum(records) AS records "
            f"FROM {ROLLUP_TABLE} GROUP BY ALL"
        )
        con.execute(f"DELETE FROM {ROLLUP_TABLE}")
        con.execute(f"INSERT INTO {ROLLUP_TABLE} SELECT * FROM _rollup_compact ORDER BY day, domain")
        con.execute("DROP TABLE _rollup_compact")
    row = con.execute(f"SELECT count(*) FROM {ROLLUP_TABLE}").fetchone()
    return int(row[0]) if row else 0
