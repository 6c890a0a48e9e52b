"""dmarclens.connect / load_dataframe, DuckDB's one-writer rule, snapshots,
and the example script in docs/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

import dmarclens
from dmarclens.core.errors import StoreError
from dmarclens.generator.spec import DkimAuth, PolicySpec, RecordSpec, ReportSpec, SpfAuth
from dmarclens.generator.xmlgen import render_report
from dmarclens.query.saved import QueryParamError, QueryUsageError
from dmarclens.store.db import open_db
from tests.analyst.scenario import AS_OF, M365_NEW, NEW_TENANT_FROM, day, report_specs
from tests.conftest import REPO, run_cli


def one_more_report(folder: Path) -> Path:
    """A report for the day after the world ends, from a brand-new source."""
    begin = int(pd.Timestamp(AS_OF + pd.Timedelta(days=1), tz="UTC").timestamp())
    spec = ReportSpec(
        org_name="google.com", email="noreply-dmarc-support@google.com", report_id="day-35", begin=begin,
        end=begin + 86399, policy=PolicySpec(domain="example.com"), receiver="google.com",
        records=[RecordSpec(source_ip="198.51.100.99", count=11, header_from="example.com",
                            envelope_from="example.com", dkim=(DkimAuth("example.com", "selector1"),),
                            spf=(SpfAuth("example.com"),))],
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "day-35.xml"
    path.write_bytes(render_report(spec))
    return path


def test_connect_is_read_only_with_views_ready(world_template: Path) -> None:
    con = dmarclens.connect(world_template)
    try:
        assert con.execute("SELECT count(*) FROM v_sources").fetchone()[0] > 0
        for statement in ("CREATE TABLE mine (x INT)", "DELETE FROM records", "DROP VIEW v_sources"):
            with pytest.raises(duckdb.Error, match="read-only"):
                con.execute(statement)
    finally:
        con.close()
    with pytest.raises(StoreError, match="not found"):
        dmarclens.connect(world_template.parent / "missing.duckdb")


def test_load_dataframe(world_template: Path, world_con: duckdb.DuckDBPyConnection) -> None:
    df = dmarclens.load_dataframe("new_passing_sources", db=world_template, days=14)
    assert isinstance(df, pd.DataFrame)
    assert df[["source_ip", "passed"]].values.tolist() == [[M365_NEW, 100]]
    same = dmarclens.load_dataframe("new_passing_sources", con=world_con, as_of=day(NEW_TENANT_FROM), days=1)
    assert same["messages"].tolist() == [20]
    with pytest.raises(QueryParamError, match="parameter days: expected a whole number"):
        dmarclens.load_dataframe("new_passing_sources", con=world_con, days="two weeks")


def test_an_open_reader_blocks_ingest_but_a_snapshot_does_not(world_db: Path, tmp_path: Path) -> None:
    """DuckDB's one-writer rule, both sides of it, with a real ingest process."""
    extra = one_more_report(tmp_path / "incoming")
    quick = {"DMARCLENS_LOCK_TIMEOUT": "1"}

    reader = dmarclens.connect(world_db)
    try:
        res = run_cli("ingest", str(extra), "--db", str(world_db), env=quick)
        assert res.returncode == 1 and "locked" in res.stderr, res.stderr
    finally:
        reader.close()

    snap = dmarclens.connect(world_db, snapshot=True)
    try:
        res = run_cli("ingest", str(extra), "--db", str(world_db), env=quick)
        assert res.returncode == 0, res.stderr
        # The snapshot is frozen at the moment it was taken ...
        assert snap.execute("SELECT count(*) FROM v_reports").fetchone()[0] == len(report_specs())
        assert snap.execute("SELECT max(day) FROM v_records").fetchone()[0] == AS_OF
    finally:
        snap.close()
    # ... and a new one sees the ingest.
    fresh = dmarclens.connect(world_db, snapshot=True)
    try:
        assert fresh.execute("SELECT count(*) FROM v_reports").fetchone()[0] == len(report_specs()) + 1
    finally:
        fresh.close()


def test_snapshot_to_a_kept_path_can_be_scratch_and_upgrades_old_files(world_db: Path, tmp_path: Path) -> None:
    # Pretend the file was written before 0005 existed.
    with open_db(world_db) as con:
        con.execute("DROP VIEW v_sources")
        con.execute("DROP VIEW v_reports")
        con.execute("DELETE FROM schema_migrations WHERE version = 5")
    with pytest.warns(UserWarning, match=r"lacks schema migrations \[5\]"):
        old = dmarclens.connect(world_db)
    old.close()

    keep = tmp_path / "mine.duckdb"
    scratch = dmarclens.connect(world_db, snapshot=keep, read_only=False)
    try:
        assert scratch.execute("SELECT count(*) FROM v_sources WHERE domain = 'example.com'").fetchone()[0] == 8
        scratch.execute("CREATE TABLE my_notes AS SELECT source_ip FROM v_sources WHERE failed > 0")
    finally:
        scratch.close()
    assert keep.exists()
    with open_db(world_db, read_only=True) as con:  # the original is untouched
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'my_notes'").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'v_sources'").fetchone()[0] == 0
    with pytest.raises(QueryUsageError, match="different file"):
        dmarclens.connect(world_db, snapshot=world_db)


def test_example_script_runs_top_to_bottom(world_template: Path, tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "docs" / "analyst_example.py"), str(world_template), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "v_sources" in res.stdout and "v_reports" in res.stdout
    assert M365_NEW in res.stdout  # the new tenant is found and followed
    assert f"== reports that saw {M365_NEW}" in res.stdout
    written = pd.read_parquet(tmp_path / "new_passing_sources.parquet")
    assert written["source_ip"].tolist() == [M365_NEW]
