"""Parsing with a worker pool stores exactly what one process stores."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dmarclens.generator import many_small_reports
from dmarclens.ingest import pool
from dmarclens.ingest.writer import ingest_paths
from dmarclens.sources.files import iter_paths
from tests.perf.data import DAY0, render, report_spec

# What a second run may legitimately change: run ids, clocks, sequence ids.
TABLES = {
    "reports": "SELECT * EXCLUDE (ingest_run_id, ingested_at) FROM reports ORDER BY report_key",
    "report_raw": "SELECT * FROM report_raw ORDER BY report_key",
    "records": "SELECT * EXCLUDE (ingest_run_id) FROM records ORDER BY ALL",
    "ip_info": "SELECT * EXCLUDE (offline_resolved_at) FROM ip_info ORDER BY ip",
    "ingest_items": "SELECT * EXCLUDE (item_id, run_id, seen_at) FROM ingest_items ORDER BY item_id",
}


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """180 small reports, a re-sent copy, a multi-day report, a broken file."""
    folder = tmp_path_factory.mktemp("inbox")
    names = []
    for name, data in many_small_reports(180, seed=5):
        (folder / name).write_bytes(data)
        names.append(name)
    shutil.copy(folder / names[10], folder / ("zz-copy-" + names[10]))  # a duplicate, found after the original
    (folder / "long.xml").write_bytes(render(report_spec(300, begin=DAY0 - 5 * 86400, span=3 * 86400 + 7)))
    (folder / "broken.xml").write_bytes(b"<feedback><report_metadata>")
    return folder


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {name: con.execute(sql).fetchall() for name, sql in TABLES.items()}
    finally:
        con.close()


def test_pool_and_single_process_store_the_same(inbox: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pooled: list[int] = []
    real = pool._pooled

    def spy(items: Any, workers: int, ahead: int = 0) -> Any:
        pooled.append(workers)
        return real(items, workers, ahead)

    monkeypatch.setattr(pool, "_pooled", spy)
    one = ingest_paths([inbox], tmp_path / "one.duckdb", workers=1)
    two = ingest_paths([inbox], tmp_path / "two.duckdb", workers=2)
    assert pooled == [2]  # the pool really ran for the second ingest only
    assert one.to_json() | {"run_id": "", "seconds": 0} == two.to_json() | {"run_id": "", "seconds": 0}
    assert (one.stored, one.duplicates, one.rejected) == (181, 1, 1)
    a, b = dump(tmp_path / "one.duckdb"), dump(tmp_path / "two.duckdb")
    for name in TABLES:
        assert a[name] == b[name], name
    con = duckdb.connect(str(tmp_path / "two.duckdb"), read_only=True)
    parsers = con.execute("SELECT parser, count(*) FROM reports GROUP BY 1").fetchall()
    con.close()
    assert parsers == [("fast", 181)]


def test_results_come_back_in_input_order(inbox: Path) -> None:
    raws = list(iter_paths([inbox]))
    assert len(raws) >= pool.POOL_MIN_ITEMS
    order = [(p.raw.origin, p.raw.member) for p in pool.parse_all(raws, workers=2)]
    assert order == [(r.origin, r.member) for r in raws]


def test_short_inputs_do_not_start_a_pool(inbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pool(items: Any, workers: int) -> Any:
        raise AssertionError("pool started for a short input")

    monkeypatch.setattr(pool, "_pooled", no_pool)
    raws = list(iter_paths([inbox]))[: pool.POOL_MIN_ITEMS - 1]
    assert len(list(pool.parse_all(raws, workers=2))) == len(raws)
    assert pool.resolve_workers(0) >= 1 and pool.resolve_workers(3) == 3


def test_big_reports_parsed_in_split_processes_store_what_one_process_stores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The big-report path (a child process, the report split across
    processes that each look up their own IPs, the XML gzipped on a thread,
    the database opened while the child parses) against one process: two
    big reports (one plain, one gzipped, sharing IPs across their parts) and
    a small one between them store exactly the same rows, and the ledger
    hashes the files as they are on disk."""
    import gzip
    import hashlib

    from dmarclens.parse import fast as fast_path

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-big.xml").write_bytes(render(report_spec(3000, span=2 * 86400 + 3600)))
    (folder / "b-small.xml").write_bytes(render(report_spec(5, begin=DAY0 - 86400)))
    (folder / "c-big.xml.gz").write_bytes(gzip.compress(render(report_spec(2500, begin=DAY0 - 3 * 86400)), mtime=0))
    one = ingest_paths([folder], tmp_path / "one.duckdb", workers=1)

    big = min((folder / "a-big.xml").stat().st_size, (folder / "c-big.xml.gz").stat().st_size)
    assert (folder / "b-small.xml").stat().st_size < big
    monkeypatch.setattr(pool, "BIG_ITEM_BYTES", big)
    monkeypatch.setattr(pool, "FACTS_SPLIT_MIN", 10)
    monkeypatch.setattr(fast_path, "SPLIT_MIN_BYTES", 0)
    log = tmp_path / "parts.log"  # _assemble runs in the child process
    real = fast_path._assemble

    def counting(ps: list[Any], *a: Any) -> Any:
        with log.open("a") as fh:
            fh.write(f"{sum(p.extra is not None for p in ps)}\n")
        return real(ps, *a)

    monkeypatch.setattr(fast_path, "_assemble", counting)
    fast_path.set_split_processes(2)
    try:
        two = ingest_paths([folder], tmp_path / "two.duckdb", workers=2)
    finally:
        fast_path.set_split_processes(None)
    assert log.read_text().split().count("2") == 2  # both big reports were split, and each part looked up its own IPs
    assert one.to_json() | {"run_id": "", "seconds": 0} == two.to_json() | {"run_id": "", "seconds": 0}
    assert dump(tmp_path / "one.duckdb") == dump(tmp_path / "two.duckdb")
    con = duckdb.connect(str(tmp_path / "two.duckdb"), read_only=True)
    try:
        ledger = dict(con.execute("SELECT origin, sha256 FROM ingest_items").fetchall())
    finally:
        con.close()
    for path in folder.iterdir():
        assert ledger[str(path)] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_worker_that_dies_has_its_chunks_parsed_in_process(inbox: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A parsing process killed mid-run (out of memory, a crash in a C
    library) loses nothing: the writer parses what it held, in order."""
    import os

    parent = os.getpid()
    real = pool._parse_chunk
    victim = sorted(p.name for p in inbox.iterdir())[100]

    def crashing(chunk: list[Any]) -> Any:
        if os.getpid() != parent and any(victim in str(getattr(i, "path", "")) for i in chunk):
            os._exit(9)
        return real(chunk)

    monkeypatch.setattr(pool, "_parse_chunk", crashing)
    one = ingest_paths([inbox], tmp_path / "one.duckdb", workers=1)
    two = ingest_paths([inbox], tmp_path / "two.duckdb", workers=2)
    assert any("parsing process died" in r.getMessage() for r in caplog.records)
    assert one.to_json() | {"run_id": "", "seconds": 0} == two.to_json() | {"run_id": "", "seconds": 0}
    assert dump(tmp_path / "one.duckdb") == dump(tmp_path / "two.duckdb")


def test_a_big_mbox_in_a_pooled_folder_is_read_by_the_writer_and_spread(
        inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers read small files themselves, but a file of BIG_ITEM_BYTES or
    more (here an mbox) is read by the writer so its messages spread over
    many tasks instead of one worker holding all of their results."""
    from dmarclens.core.models import RawItem
    from dmarclens.sources.files import FileTask, iter_path_tasks

    folder = tmp_path / "mix"
    shutil.copytree(inbox, folder)
    mbox = folder / "archive.mbox"
    shutil.copy(Path(__file__).resolve().parents[2] / "sample_reports" / "mbox" / "google.com.mbox", mbox)
    size = mbox.stat().st_size
    assert all(p.stat().st_size < size for p in folder.iterdir() if p != mbox)
    monkeypatch.setattr(pool, "BIG_ITEM_BYTES", size)

    items = list(pool._open_big_files(iter_path_tasks([folder])))
    from_mbox = [i for i in items if isinstance(i, RawItem) and i.origin == str(mbox)]
    assert len(from_mbox) > 1 and all(i.data for i in from_mbox)
    assert all(isinstance(i, FileTask) for i in items if i not in from_mbox)

    one = ingest_paths([folder], tmp_path / "one.duckdb", workers=1)
    two = ingest_paths([folder], tmp_path / "two.duckdb", workers=2)
    assert one.stored > len(from_mbox)
    assert one.to_json() | {"run_id": "", "seconds": 0} == two.to_json() | {"run_id": "", "seconds": 0}
    assert dump(tmp_path / "one.duckdb") == dump(tmp_path / "two.duckdb")
