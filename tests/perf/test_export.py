"""`dmarclens export parquet`: a Hive-partitioned lake with the database's totals,
written incrementally and idempotently."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from dmarclens.ingest.writer import ingest_paths
from dmarclens.query.export import MANIFEST, export_parquet, lake_glob
from tests.conftest import run_cli
from tests.perf.data import DAY0, render, report_spec


def write_reports(folder: Path, specs: list[tuple[str, int, str]]) -> None:
    """(domain, day offset, report id) → one XML file each."""
    folder.mkdir(parents=True, exist_ok=True)
    for domain, day, rid in specs:
        spec = report_spec(15, begin=DAY0 + day * 86400, report_id=rid, seed=hash(rid) % 1000)
        xml = render(spec).replace(b"<domain>example.com</domain>\n    <adkim>",
                                   f"<domain>{domain}</domain>\n    <adkim>".encode(), 1)
        (folder / f"{rid}.xml").write_bytes(xml)


def lake_totals(lake: Path) -> list[tuple]:
    con = duckdb.connect()
    try:
        return con.execute(
            f"SELECT day, domain, count(*), sum(count), count(DISTINCT source_ip), sum(dmarc_pass::INT) "
            f"FROM read_parquet('{lake_glob(lake)}', hive_partitioning = true) GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    finally:
        con.close()


def db_totals(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT day, domain, count(*), sum(count), count(DISTINCT source_ip), sum(dmarc_pass::INT) "
            "FROM v_records GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    finally:
        con.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "r.duckdb"
    write_reports(tmp_path / "in1", [("example.com", 0, "a1"), ("example.com", 1, "a2"), ("example.org", 0, "b1"),
                                     ("shop.example.net", 2, "c1")])
    summary = ingest_paths([tmp_path / "in1"], path)
    assert summary.stored == 4, summary.to_json()
    return path


def test_lake_has_the_database_totals_and_columns(db: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = export_parquet(db, lake)
    assert result.written == 4 and result.unchanged == 0 and result.rows == sum(r[2] for r in db_totals(db))
    assert lake_totals(lake) == db_totals(db)
    assert sorted(p.relative_to(lake).parts[:2] for p in lake.glob("day=*/domain=*")) == [
        ("day=2026-10-05", "domain=example.com"), ("day=2026-10-05", "domain=example.org"),
        ("day=2026-10-06", "domain=example.com"), ("day=2026-10-07", "domain=shop.example.net"),
    ]
    con = duckdb.connect(str(db), read_only=True)
    want = {r[0]: r[1] for r in con.execute("DESCRIBE v_records").fetchall()}
    # Row for row, the lake is v_records (day and domain come from the folder names).
    cols = ", ".join(f'"{c}"' for c in want)
    con.execute(f"CREATE TEMP VIEW lake AS SELECT {cols} FROM read_parquet('{lake_glob(lake)}', hive_partitioning=true)")
    assert con.execute(f"SELECT count(*) FROM (SELECT {cols} FROM v_records EXCEPT ALL SELECT * FROM lake)").fetchone() == (0,)
    assert con.execute(f"SELECT count(*) FROM (SELECT * FROM lake EXCEPT ALL SELECT {cols} FROM v_records)").fetchone() == (0,)
    got = {r[0]: r[1] for r in con.execute("DESCRIBE lake").fetchall()}
    con.close()
    assert got == want


def test_export_is_incremental_and_idempotent(db: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    export_parquet(db, lake)
    files_before = {p: p.stat().st_mtime_ns for p in lake.glob("day=*/domain=*/*.parquet")}

    again = export_parquet(db, lake)
    assert (again.written, again.unchanged, again.removed) == (0, 4, 0)
    assert {p: p.stat().st_mtime_ns for p in lake.glob("day=*/domain=*/*.parquet")} == files_before

    # A late report for an exported (day, domain) and one for a new day.
    write_reports(tmp_path / "in2", [("example.com", 1, "a3"), ("example.org", 3, "b2")])
    ingest_paths([tmp_path / "in2"], db)
    third = export_parquet(db, lake)
    assert (third.written, third.unchanged, third.removed) == (2, 3, 0)
    assert sorted(third.partitions) == ["day=2026-10-06/domain=example.com", "day=2026-10-08/domain=example.org"]
    untouched = [p for p in files_before if "2026-10-06" not in str(p)]
    assert all(p.exists() for p in untouched)
    assert not any(p.exists() for p in files_before if "day=2026-10-06/domain=example.com" in p.as_posix())
    assert len(list(lake.glob("day=2026-10-06/domain=example.com/*.parquet"))) == 1
    assert lake_totals(lake) == db_totals(db)


def test_enrichment_changes_and_deletions_reach_the_lake(db: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    export_parquet(db, lake)
    con = duckdb.connect(str(db))
    ip = con.execute("SELECT source_ip FROM records r JOIN reports p USING (report_key) "
                     "WHERE p.domain = 'example.org' LIMIT 1").fetchone()[0]
    con.execute("UPDATE ip_info SET reverse_dns = 'mail.example.org', base_domain = 'example.org' WHERE ip = ?", [ip])
    con.execute("DELETE FROM records WHERE report_key IN (SELECT report_key FROM reports WHERE domain = 'shop.example.net')")
    con.close()
    result = export_parquet(db, lake)
    assert result.removed == 1 and not (lake / "day=2026-10-07").exists()
    assert "day=2026-10-05/domain=example.org" in result.partitions
    assert lake_totals(lake) == db_totals(db)
    check = duckdb.connect()
    rdns = check.execute(f"SELECT DISTINCT reverse_dns FROM read_parquet('{lake_glob(lake)}', hive_partitioning=true) "
                         "WHERE source_ip = ?", [ip]).fetchall()
    check.close()
    assert rdns == [("mail.example.org",)]


def test_cli_window_and_manifest(db: Path, tmp_path: Path) -> None:
    lake = tmp_path / "window"
    res = run_cli("export", "parquet", str(lake), "--db", str(db), "--since", "2026-10-06", "--until", "2026-10-06",
                  "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["written"] == 1 and out["partitions"] == ["day=2026-10-06/domain=example.com"]
    manifest = json.loads((lake / MANIFEST).read_text())
    assert list(manifest["partitions"]) == ["2026-10-06|example.com"]
    bad = run_cli("export", "parquet", str(lake), "--db", str(db), "--since", "2026-10-07", "--until", "2026-10-01")
    assert bad.returncode == 2
    help_text = run_cli("export", "parquet", "--help").stdout
    assert "Example:" in help_text


def test_scale_doc_table_definitions_list_the_lake_columns(db: Path) -> None:
    """docs/scale.md's Spark and Trino tables name exactly v_records' columns."""
    import re

    con = duckdb.connect(str(db), read_only=True)
    want = {r[0] for r in con.execute("DESCRIBE v_records").fetchall()}
    con.close()
    text = (Path(__file__).resolve().parents[2] / "docs" / "scale.md").read_text(encoding="utf-8")
    for table in ("CREATE TABLE dmarc_records (", "CREATE TABLE hive.dmarc.records ("):
        body = text.split(table, 1)[1].split("\n)", 1)[0]
        body = re.sub(r"<[^<>]*>|\([^()]*\)", "", body)  # drop nested type parameters
        got = {part.strip().split()[0] for part in body.split(",") if part.strip()}
        assert got == want, f"{table}: missing {want - got}, extra {got - want}"
