"""Big files are parsed through a read-only map, a window at a time, and their
record batches cross to the writer as files (dmarclens.core.bigfile, dmarclens.core.spill).

Asserted: every helper answers on a mapped file what the bytes method answers,
whatever the window size and wherever a pattern falls across windows; every
hostile and ordinary file comes out of the mapped parse exactly as out of the
in-memory one (same rejection reason, or the same report, records, hash and
raw XML); a file truncated under its map is read again and rejected, not lost;
spilled batches survive pickling and leave no file behind; a write that runs
out of DuckDB memory is written again, once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from dmarclens.core import arrow, bigfile, records
from dmarclens.core.errors import ReportParseError
from dmarclens.core.payload import decompress
from dmarclens.core.spill import SpilledBatches
from dmarclens.generator import big_report_xml
from dmarclens.ingest import pool
from dmarclens.ingest.parsed import Parsed, parse_raw
from dmarclens.ingest.writer import ingest_paths
from dmarclens.parse import fast as fast_path
from dmarclens.parse import stream
from dmarclens.parse.formats import _DRAFT_RE, _EMPTY_REASON_RE
from dmarclens.parse.guards import _RECORD_RE
from dmarclens.sources.files import iter_file
from dmarclens.store import db as dbmod
from tests.hostile.cases import CASES, good_inputs, zip_of
from tests.imap.helpers import query

_ATTRIBUTE = stream._ATTRIBUTE


def _mapped(path: Path) -> bigfile.mmap.mmap:
    with path.open("rb") as fh:
        return bigfile.map_file(fh)


# Boundary material: whitespace runs inside matches, needles split at every
# offset around a window edge, record starts right at it.
_TRICKY = (
    b"<feedback>" + b" " * 13 + b"<reason>" + b" " * 40 + b"</reason>" + b"record" * 3
    + b"<record>" + b"x=" + b" " * 30 + b'"v"' + b"<identities>" + b"<reason/>" + b"\n" * 50 + b"<spf>"
    + b"<![CDATA[" + b"rec" + b"ord" + b"</feedback>"
)


@pytest.mark.parametrize("how", ["pread", "map slices"])
@pytest.mark.parametrize("window", [7, 16, 64, 4096])
def test_helpers_on_a_map_answer_what_bytes_methods_answer(window: int, how: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows read with preadv, and (where there is no pread) slices of the map."""
    monkeypatch.setattr(bigfile, "WINDOW", window)
    monkeypatch.setattr(bigfile, "_FIRST_READ", max(1, window // 3))
    docs = {
        "tricky": _TRICKY,
        "shifted": b"ab" + _TRICKY * 3,
        "report": big_report_xml(40, 20, seed=3),
        "blank": b" \n\t " * 40,
        "no-match": b"x" * 500,
        "long-run": b"<a>" + b"t" * 300 + b"<b>" + b"u" * 90 + b"</b>",
    }
    needles = [b"<![CDATA[", b"record", b"<reason", b"<spf>", b"<scope>", b"xs:schema", b"<", b"zzz"]
    patterns = [_ATTRIBUTE, _EMPTY_REASON_RE, _DRAFT_RE, _RECORD_RE]
    for name, data in docs.items():
        path = tmp_path / name
        path.write_bytes(data)
        mm = _mapped(path)
        if how == "map slices":
            mm.fd = -1
        assert bigfile.blank(mm) == data.isspace(), name
        for span in (5, 64, 100, 1000):
            assert bigfile.first_span_without(mm, b"<", span) == bigfile.first_span_without(data, b"<", span), \
                (name, span)
        for offset, size in ((0, 10), (len(data) - 3, 10), (5, 0)):
            assert bigfile.read_at(mm, offset, size) == data[offset: offset + size]
        for needle in needles:
            for start in (0, 1, 5, 33, len(data) // 2):
                assert bigfile.find(mm, needle, start) == data.find(needle, start), (name, needle, start)
            assert bigfile.contains(mm, needle) == (needle in data), (name, needle)
        assert bigfile.count(mm, b"record") == data.count(b"record"), name
        for pattern in patterns:
            for start in (0, 3, 40):
                assert bigfile.search(pattern, mm, start) == (pattern.search(data, start) is not None), \
                    (name, pattern.pattern, start)
            assert bigfile.count_matches(pattern, mm) == len(pattern.findall(data)), (name, pattern.pattern)
        assert bigfile.sha256_hex(mm) == hashlib.sha256(data).hexdigest()
        digest, gz = bigfile.gzip_stream(mm, 3)
        assert digest == hashlib.sha256(data).hexdigest() and gzip.decompress(gz) == data
        assert bigfile.materialize(mm) == data
        # Pages handed back are read again from the file: nothing changes.
        bigfile.release_all(mm)
        assert mm[:] == data


def test_pieces_cut_only_before_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bigfile, "WINDOW", 1000)
    data = big_report_xml(60, 30, seed=4)
    path = tmp_path / "r.xml"
    path.write_bytes(data)
    pieces = list(bigfile.pieces(_mapped(path), 25))
    assert len(pieces) > 3
    assert b"".join(pieces) == data[25:]
    assert all(p.startswith(b"<record") for p in pieces[1:])


def _outcome(p: Parsed) -> tuple:
    """Everything the writer takes from a parse (the raw gzip compared by content)."""
    if p.error is not None:
        return ("error", p.error)
    assert p.item is not None
    if p.item.report is None:
        return ("item", p.item.kind, p.item.summary)
    report = p.item.report
    return ("report", p.key, report.parser, report.format, report.begin, report.end, report.org_name,
            report.report_id, report.policy, report.records.messages, report.records.columns(),
            p.sha256, p.size_bytes, p.raw_sha256, gzip.decompress(p.raw_gz) if p.raw_gz else None)


def _tls_report(policies: int) -> bytes:
    policy = {"policy": {"policy-type": "sts", "policy-domain": "example.com"},
              "summary": {"total-successful-session-count": 10, "total-failure-session-count": 0}}
    return json.dumps({
        "organization-name": "Google Inc.", "contact-info": "smtp-tls-reporting@google.com", "report-id": "tls-1",
        "date-range": {"start-datetime": "2026-10-05T00:00:00Z", "end-datetime": "2026-10-05T23:59:59Z"},
        "policies": [policy] * policies}).encode()


def _file_cases(root: Path) -> dict[str, bytes]:
    out = {case.name: case.build(root) for case in CASES if not case.sparse_size}
    out.update(good_inputs())
    out["big-report.xml"] = big_report_xml(3_000, 900, seed=11)
    out["tls-report.json"] = _tls_report(2_000)  # not XML: must reach parsedmarc as bytes
    out["tls-report.json.gz"] = gzip.compress(_tls_report(2_000))
    return out


def test_every_file_parses_the_same_mapped_as_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hostile catalogue, the ordinary reports and a generated big report:
    mapped with a small window (many windows and cuts), each gives what the
    bytes give."""
    monkeypatch.setattr(bigfile, "MAP_MIN_BYTES", 0)
    monkeypatch.setattr(bigfile, "WINDOW", 4096)
    before = fast_path.split_processes()
    fast_path.set_split_processes(1)
    mapped_count = 0
    try:
        for name, data in _file_cases(tmp_path).items():
            path = tmp_path / "files" / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            in_memory = [_outcome(parse_raw(raw)) for raw in iter_file(path)]
            raws = list(iter_file(path, map_big=True))
            mapped_count += sum(bigfile.is_mapped(r.data) for r in raws)
            assert [_outcome(parse_raw(raw)) for raw in raws] == in_memory, name
    finally:
        fast_path.set_split_processes(before)
    assert mapped_count >= 30  # the bare files really went through the map


def _inflated(data: bytes, inflate_dir: str | None) -> tuple:
    try:
        out = decompress(data, inflate_dir=inflate_dir)
    except ReportParseError as e:
        return ("refused", str(e))
    return ("bytes", bigfile.materialize(out), bigfile.is_mapped(out))


def test_inflating_into_a_mapped_file_gives_the_same_bytes_or_the_same_refusal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gzip and zip payloads of the hostile catalogue (bombs, truncated,
    corrupt, many members) and of ordinary reports: inflated into an unnamed
    file and mapped, they give what inflating into memory gives."""
    monkeypatch.setattr(bigfile, "MAP_MIN_BYTES", 0)  # zip members of any size go to a file
    report = big_report_xml(2_000, 500, seed=16)
    payloads = {name: data for name, data in _file_cases(tmp_path).items()
                if data[:2] == b"\x1f\x8b" or data[:4] == b"PK\x03\x04"}
    payloads["report.xml.gz"] = gzip.compress(report)
    payloads["report.zip"] = zip_of({"report.xml": report})
    payloads["truncated.gz"] = gzip.compress(report)[:-50]
    payloads["empty.gz"] = gzip.compress(b"")
    assert len(payloads) >= 10
    spill = tmp_path / "spill"
    spill.mkdir()
    for name, data in payloads.items():
        in_memory = _inflated(data, None)
        mapped = _inflated(data, str(spill))
        assert mapped[:2] == in_memory[:2], name
        if mapped[0] == "bytes" and mapped[1]:
            assert mapped[2], f"{name}: not mapped"
        # Nowhere to write (a missing or read-only directory): inflated in memory instead.
        assert _inflated(data, str(tmp_path / "missing")) == in_memory, name
    assert not list(spill.iterdir())  # unnamed files: nothing to clean up


def test_a_file_truncated_under_its_map_is_read_again_and_rejected(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A real fault: reading a mapped page past the new end of the file raises
    SIGBUS in the child that parses it; the writer reads the file again."""
    monkeypatch.setattr(bigfile, "MAP_MIN_BYTES", 0)
    path = tmp_path / "shrinking.xml"
    path.write_bytes(big_report_xml(3_000, 900, seed=13))
    (raw,) = iter_file(path, map_big=True)
    assert bigfile.is_mapped(raw.data)
    os.truncate(path, path.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="dmarclens.ingest.pool"):
        parsed = pool._isolated(raw, spill_dir=str(tmp_path))
    assert "the parsing process died (exit -7)" in caplog.text  # SIGBUS
    assert parsed.error is not None and "truncated XML" in parsed.error
    assert parsed.size_bytes == path.stat().st_size
    assert not list(tmp_path.glob(".dmarclens-spill-*"))


def test_an_inflated_zip_member_whose_child_dies_is_parsed_from_its_map(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a map of the user's own file is read again after the child died;
    a member inflated into an unnamed file is parsed as it is, and the ledger
    gets the member's hash and size, as in memory."""
    monkeypatch.setattr(bigfile, "MAP_MIN_BYTES", 0)
    path = tmp_path / "one.zip"
    path.write_bytes(zip_of({"a.xml": big_report_xml(3_000, 900, seed=19)}))
    (raw,) = iter_file(path, map_big=True, inflate_dir=str(tmp_path))
    assert bigfile.is_mapped(raw.data) and raw.data.path is None
    monkeypatch.setattr(pool, "_isolated_child", lambda box, sender, spill=None: os._exit(9))
    died = pool._isolated(raw, spill_dir=str(tmp_path))
    (in_memory,) = [parse_raw(r) for r in iter_file(path)]
    assert _outcome(died) == _outcome(in_memory)
    assert died.error is None and died.size_bytes == len(big_report_xml(3_000, 900, seed=19))


def test_a_file_that_cannot_be_mapped_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some filesystems (FUSE with direct_io) refuse mmap, and a file emptied
    between stat and map cannot be mapped: both are read as before. The
    refusal is simulated: no filesystem here refuses."""
    monkeypatch.setattr(bigfile, "MAP_MIN_BYTES", 0)
    path = tmp_path / "r.xml"
    path.write_bytes(big_report_xml(500, 100, seed=20))
    for error in (OSError(19, "No such device"), ValueError("cannot mmap an empty file")):
        def refuse(*_a: object, error: Exception = error, **_k: object) -> None:
            raise error
        monkeypatch.setattr(bigfile, "map_file", refuse)
        (raw,) = iter_file(path, map_big=True)
        assert raw.data == path.read_bytes() and raw.problem is None


def test_stale_spill_directories_of_dead_writers_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f"{pool.SPILL_PREFIX}{dead}-abc"
    live = tmp_path / f"{pool.SPILL_PREFIX}1-abc"  # pid 1 is alive
    mine = tmp_path / f"{pool.SPILL_PREFIX}{os.getpid()}-abc"
    for d in (stale, live, mine):
        d.mkdir()
        (d / "x.arrow").write_bytes(b"x")
    pool._sweep_spill_dirs(str(tmp_path))
    assert not stale.exists() and live.exists() and mine.exists()


def test_a_commit_never_runs_under_the_write_bound(tmp_path: Path) -> None:
    """DuckDB 2.0: a commit that runs out of memory while it checkpoints
    invalidates the whole database instance. Under 64 MB this commit does;
    through store.db.commit it succeeds and the database stays usable."""
    def write(con: duckdb.DuckDBPyConnection, finish: object) -> None:
        con.execute("BEGIN")
        con.execute("INSERT INTO t SELECT md5(range::varchar), md5(range::varchar) || repeat('y', 40), "
                    "md5((range * 7)::varchar) FROM range(500000)")
        finish(con)  # type: ignore[operator]

    def setup(path: Path) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(str(path))
        con.execute("SET threads = 1")
        con.execute("SET checkpoint_threshold = '1MB'")
        con.execute("CREATE TABLE t (a VARCHAR PRIMARY KEY, b VARCHAR, c VARCHAR)")
        return con

    plain = setup(tmp_path / "plain.duckdb")
    with pytest.raises(duckdb.Error):
        dbmod.bounded(plain, lambda: write(plain, lambda c: c.execute("COMMIT")), limits=("64MB",))
    plain.close()
    ours = setup(tmp_path / "ours.duckdb")
    dbmod.bounded(ours, lambda: write(ours, dbmod.commit), limits=("64MB",))
    assert ours.execute("SELECT count(*) FROM t").fetchone() == (500_000,)
    ours.close()


def test_spilled_batches_pickle_as_paths_and_vanish_when_adopted(tmp_path: Path) -> None:
    pa = arrow.import_pyarrow()
    batches = [pa.record_batch({"n": pa.array(range(i, i + 5), pa.int64())}) for i in (0, 5, 10)]
    spilled = SpilledBatches(str(tmp_path))
    for b in batches[:2]:
        spilled.append(b)
    more = SpilledBatches(str(tmp_path))
    more.append(batches[2])
    spilled.extend(more)
    assert len(spilled) == 3 and bool(spilled)
    blob = pickle.dumps(spilled)
    assert len(blob) < 1000  # paths, not rows
    copy = pickle.loads(blob)
    assert [b.column(0).to_pylist() for b in copy] == [b.column(0).to_pylist() for b in batches]
    files = sorted(tmp_path.glob("*.arrow"))
    assert len(files) == 2
    copy.adopt()
    assert not list(tmp_path.glob("*.arrow"))  # unlinked, still readable through the open files
    assert [b.column(0).to_pylist() for b in copy] == [b.column(0).to_pylist() for b in batches]
    assert [b.column(0).to_pylist() for b in copy] == [b.column(0).to_pylist() for b in batches]  # twice: a retry
    copy.close()


def _records(db: Path) -> list[tuple]:
    return query(db, "SELECT report_key, source_ip, count, disposition, dkim, spf, day FROM records ORDER BY ALL")


def test_a_big_report_is_stored_through_map_and_spill_as_one_process_stores_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bigfile, "MAP_MIN_BYTES", 64 * 1024)
    monkeypatch.setattr(pool, "BIG_ITEM_BYTES", 64 * 1024)
    monkeypatch.setattr(fast_path, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(records, "CHUNK_ROWS", 500)  # several spilled batches per part
    src = tmp_path / "in"
    src.mkdir()
    (src / "big.xml").write_bytes(big_report_xml(6_000, 2_000, seed=14))
    # Compressed, as Google (zip) and Microsoft (gzip) deliver: 80 KB on disk,
    # 4 MB of XML; inflated into a mapped file, not into memory.
    (src / "big.xml.gz").write_bytes(gzip.compress(big_report_xml(6_000, 2_000, seed=17)))
    (src / "big.zip").write_bytes(zip_of({"report.xml": big_report_xml(6_000, 2_000, seed=18)}))
    seen: list[bool] = []
    real = pool._isolated_in

    def spy(ctx, raw, on_wait, spill):  # noqa: ANN001 - records that the map and a spill directory were used
        gz = raw.data[:2] == b"\x1f\x8b"  # inflated by the child, into the spill directory
        seen.append((bigfile.is_mapped(raw.data) or gz) and spill is not None and os.path.isdir(spill))
        return real(ctx, raw, on_wait, spill)

    monkeypatch.setattr(pool, "_isolated_in", spy)
    split = ingest_paths([src], tmp_path / "split.duckdb", workers=2)
    monkeypatch.setattr(pool, "_isolated_in", real)
    one = ingest_paths([src], tmp_path / "one.duckdb", workers=1)
    assert seen == [True, True, True]
    assert split.stored == one.stored == 3 and split.records == one.records == 18_000
    assert _records(tmp_path / "split.duckdb") == _records(tmp_path / "one.duckdb")
    ledger = "SELECT origin, member, outcome, sha256, size_bytes, records FROM ingest_items ORDER BY origin"
    assert query(tmp_path / "split.duckdb", ledger) == query(tmp_path / "one.duckdb", ledger)
    gz = src / "big.xml.gz"
    assert (str(gz), None, "stored", hashlib.sha256(gz.read_bytes()).hexdigest(), gz.stat().st_size, 6_000) in \
        query(tmp_path / "split.duckdb", ledger)
    assert not [p for p in tmp_path.rglob("*") if ".dmarclens-spill-" in p.name or p.suffix == ".arrow"]


def test_a_write_that_runs_out_of_memory_is_written_again_once(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB itself runs out under a tiny limit; the batch is then written
    under the default, and everything is stored exactly once."""
    monkeypatch.setattr(dbmod, "WORK_MEMORY_LIMITS", ("4MB",))
    src = tmp_path / "in"
    src.mkdir()
    (src / "r.xml").write_bytes(big_report_xml(20_000, 5_000, seed=15))
    with caplog.at_level(logging.INFO, logger="dmarclens.store.db"):
        summary = ingest_paths([src], tmp_path / "a.duckdb", workers=1)
    assert "needed more than 4MB of memory" in caplog.text
    assert summary.stored == 1 and summary.records == 20_000
    con = duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM records").fetchone() == (20_000,)
        assert con.execute("SELECT count(*) FROM reports").fetchone() == (1,)
        assert con.execute("SELECT count(*), min(outcome) FROM ingest_items").fetchone() == (1, "stored")
    finally:
        con.close()


def test_bounded_raises_what_is_not_about_memory(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    calls = []

    def attempt() -> None:
        calls.append(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
        raise duckdb.CatalogException("no such table")

    with pytest.raises(duckdb.CatalogException):
        dbmod.bounded(con, attempt, limits=("32MB",))
    assert len(calls) == 1 and re.match(r"30\.\d MiB|32\.0 MiB|32 MB", calls[0]), calls
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] != calls[0]
    con.close()
    shutil.rmtree(tmp_path, ignore_errors=True)
