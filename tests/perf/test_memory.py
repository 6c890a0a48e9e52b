"""Ingest memory is bounded: a 50,000-record report stays under 200 MB, and
neither more records in one report nor more reports make memory grow with
them (only the XML text of the report being parsed does)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dmarclens.generator import big_report_xml, many_small_reports

# Runs one ingest in a child and reports the peak RSS of that child and of
# anything it forked (parse workers): ru_maxrss of RUSAGE_CHILDREN, measured
# in a fresh process so earlier tests' children do not count.
_MEASURE = textwrap.dedent("""
    import json, resource, subprocess, sys
    code = (
        "import json, sys; from pathlib import Path; from dmarclens.pipeline import ingest_paths; "
        "s = ingest_paths([Path(p) for p in sys.argv[3:]], Path(sys.argv[1]), workers=int(sys.argv[2])); "
        "print(json.dumps(s.to_json()))"
    )
    proc = subprocess.run([sys.executable, "-c", code, *sys.argv[1:]], capture_output=True, text=True)
    print(json.dumps({"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr[-3000:],
                      "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
""")


def ingest_peak(db: Path, inputs: list[Path], *, workers: int = 0) -> tuple[float, dict]:
    res = subprocess.run([sys.executable, "-c", _MEASURE, str(db), str(workers), *map(str, inputs)],
                         capture_output=True, text=True, check=True)
    out = json.loads(res.stdout)
    assert out["rc"] == 0, out["err"]
    return out["peak_mb"], json.loads(out["out"])


@pytest.fixture(scope="module")
def big_50k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "google.com!example.com!big.xml"
    path.write_bytes(big_report_xml(50_000, 50_000, seed=1))
    return path


def test_a_50k_record_50k_ip_report_stays_under_200_mb(big_50k: Path, tmp_path: Path) -> None:
    peak, summary = ingest_peak(tmp_path / "a.duckdb", [big_50k])
    assert summary["stored"] == 1 and summary["records"] == 50_000
    assert peak <= 200, f"peak RSS {peak:.0f} MB"


def test_memory_does_not_grow_with_the_records_of_one_report(tmp_path: Path) -> None:
    sizes = {}
    for n in (10_000, 40_000):
        path = tmp_path / f"r{n}.xml"
        path.write_bytes(big_report_xml(n, n // 4, seed=n))
        peak, summary = ingest_peak(tmp_path / f"r{n}.duckdb", [path])
        assert summary["records"] == n
        sizes[n] = (peak, path.stat().st_size / 2**20)
    (small_peak, small_xml), (big_peak, big_xml) = sizes[10_000], sizes[40_000]
    # 30,000 more records: the extra XML text is held while it is parsed, the
    # rows themselves cost Arrow and DuckDB bytes, not Python objects (a dict
    # per record, as parsedmarc builds, would add several hundred MB here).
    assert big_peak - small_peak <= (big_xml - small_xml) + 40, sizes


def test_memory_is_flat_over_many_small_reports(tmp_path: Path) -> None:
    """Past one transaction's worth (500 reports), more reports cost no memory."""
    peaks = {}
    for n in (600, 1800):
        folder = tmp_path / f"s{n}"
        folder.mkdir()
        for name, data in many_small_reports(n, seed=n):
            (folder / name).write_bytes(data)
        peak, summary = ingest_peak(tmp_path / f"s{n}.duckdb", [folder], workers=1)
        assert summary["stored"] == n
        peaks[n] = peak
    # Allocator and DuckDB catalog noise is a few MB; holding every report
    # (as parsedmarc's result lists do) would add tens of MB per thousand.
    assert peaks[1800] - peaks[600] <= 20, peaks
