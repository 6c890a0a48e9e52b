"""The schema is versioned, fully commented, and docs/schema.md matches it."""

from __future__ import annotations

from pathlib import Path

import duckdb

from dmarclens.store.db import connect, migration_files
from dmarclens.store.docs import render_schema_markdown
from tests.conftest import REPO, run_cli


def test_migrations_are_recorded_in_order_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    con = connect(path)
    con.close()
    con = connect(path)  # second open applies nothing new
    try:
        rows = con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == [v for v, _, _ in migration_files()]
    assert rows[0][0] == 1


def test_every_table_view_and_column_is_commented(tmp_path: Path) -> None:
    con = connect(tmp_path / "s.duckdb")
    try:
        missing = con.execute(
            """SELECT table_name || '.' || column_name FROM duckdb_columns()
               WHERE schema_name = 'main' AND NOT internal AND (comment IS NULL OR comment = '')"""
        ).fetchall()
        missing += con.execute(
            """SELECT table_name FROM duckdb_tables() WHERE NOT internal AND (comment IS NULL OR comment = '')
               UNION ALL SELECT view_name FROM duckdb_views()
               WHERE NOT internal AND schema_name = 'main' AND (comment IS NULL OR comment = '')"""
        ).fetchall()
    finally:
        con.close()
    assert missing == [], f"uncommented: {missing}"


def test_schema_docs_are_current() -> None:
    current = (REPO / "docs" / "schema.md").read_text(encoding="utf-8")
    assert current == render_schema_markdown(), "docs/schema.md is stale: run `dmarclens schema-docs`"
    res = run_cli("schema-docs", "--check", cwd=REPO)
    assert res.returncode == 0, res.stderr


def test_timestamps_are_utc_and_auth_results_nested(tmp_path: Path) -> None:
    con = connect(tmp_path / "s.duckdb")
    try:
        types = dict(con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'records'"
        ).fetchall())
    finally:
        con.close()
    assert types["interval_begin"] == "TIMESTAMP WITH TIME ZONE"
    assert types["dkim"].startswith("STRUCT(") and types["dkim"].endswith("[]")


def test_query_opens_read_only(sample_db: Path) -> None:
    res = run_cli("query", "CREATE TABLE evil (x INT)", "--db", str(sample_db))
    assert res.returncode == 1 and "read-only" in res.stderr.lower()
    res = run_cli("query", "SELECT domain, sum(count) AS n FROM v_records GROUP BY 1 ORDER BY 1",
                  "--db", str(sample_db), "--format", "csv")
    assert res.returncode == 0
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "domain,n" and len(lines) >= 4
    con = duckdb.connect(str(sample_db), read_only=True)
    try:
        total = con.execute("SELECT sum(count) FROM records").fetchone()[0]
    finally:
        con.close()
    assert sum(int(line.split(",")[1]) for line in lines[1:]) == total
