"""The writer's after-commit hook and what the ingest loads before it forks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dmarclens.ingest.writer import ingest_paths
from tests.perf.data import DAY0, render, report_spec


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.xml").write_bytes(render(report_spec(40)))
    (folder / "b.xml").write_bytes(render(report_spec(7, begin=DAY0 - 86400)))
    return folder


def test_after_commit_runs_once_on_the_committed_connection(inbox: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []

    def hook(con: duckdb.DuckDBPyConnection) -> None:
        # The ingest is committed: a new transaction sees every row.
        con.execute("BEGIN TRANSACTION")
        reports = con.execute("SELECT count(*) FROM reports").fetchone()[0]
        records = con.execute("SELECT count(*) FROM records").fetchone()[0]
        con.execute("COMMIT")
        seen.append((reports, records))

    summary = ingest_paths([inbox], tmp_path / "x.duckdb", after_commit=hook)
    assert summary.stored == 2
    assert seen == [(2, summary.records)]

    again = ingest_paths([inbox], tmp_path / "x.duckdb", after_commit=hook)
    assert again.stored == 0 and again.duplicates == 2
    assert len(seen) == 1  # nothing stored: nothing to classify


def test_an_after_commit_failure_never_undoes_the_ingest(inbox: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def broken(con: Any) -> None:
        con.execute("BEGIN TRANSACTION")
        con.execute("SELECT * FROM no_such_table")

    summary = ingest_paths([inbox], tmp_path / "y.duckdb", after_commit=broken)
    assert summary.stored == 2 and summary.exit_code == 0
    assert any("after the ingest" in r.getMessage() and "no_such_table" in r.getMessage() for r in caplog.records)
    con = duckdb.connect(str(tmp_path / "y.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM reports").fetchone()[0] == 2
        assert con.execute("SELECT count(*) FROM records").fetchone()[0] == summary.records
    finally:
        con.close()


def test_importing_the_ingest_path_loads_neither_duckdb_nor_pyarrow() -> None:
    """A big report is handed to a forked child right after start-up; DuckDB
    and pyarrow are loaded while it parses, not before (the child never needs
    DuckDB, and loads pyarrow without NumPy)."""
    code = ("import sys; import dmarclens.cli, dmarclens.cli.ingest, dmarclens.ingest.writer, dmarclens.ingest.pool, "
            "dmarclens.sources.files; "
            "print(sorted(m for m in ('duckdb', 'pyarrow', 'numpy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("hold", [2.0, 0.0])
def test_run_keeps_the_database_open_between_batches_only_for_a_while(
        inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: float) -> None:
    """Back-to-back batches reuse one connection (no catalog read and close
    per batch) for at most HOLD_SECONDS; after that, and after the run, the
    file is closed so other processes get in."""
    from dmarclens.ingest import writer
    from dmarclens.sources.files import iter_paths

    monkeypatch.setattr(writer, "HOLD_SECONDS", hold)
    raws = list(iter_paths([inbox]))
    ingestor = writer.Ingestor(db_path=tmp_path / "z.duckdb", batch_items=1)
    open_between: list[bool] = []

    def items() -> Any:
        for raw in raws:
            yield raw
            open_between.append(ingestor._con is not None)  # after the batch of this item was written

    summary = ingestor.run(items())
    assert summary.stored == 2
    assert open_between == [hold > 0] * 2
    assert ingestor._con is None  # closed when the run ends
    con = duckdb.connect(str(tmp_path / "z.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM reports").fetchone()[0] == 2
    finally:
        con.close()
