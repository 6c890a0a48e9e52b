"""Ingest memory is bounded: a 50,000-record report stays under 200 MB, a
200,000-record one near it, and more reports do not make memory grow."""

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
        "import json, sys; from pathlib import Path; from dmarclens.ingest.writer import ingest_paths; "
        "s = ingest_paths([Path(p) for p in sys.argv[3:]], Path(sys.argv[1]), workers=int(sys.argv[2])); "
        "print(json.dumps(s.to_json()))"
    )
    if sys.argv[2] == "cli":
        cmd = [sys.executable, "-m", "dmarclens", "ingest", "--json", "--db", *sys.argv[1:2], *sys.argv[3:]]
    else:
        cmd = [sys.executable, "-c", code, *sys.argv[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(json.dumps({"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr[-3000:],
                      "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
""")


def ingest_peak(db: Path, inputs: list[Path], *, workers: int = 0, command: bool = False) -> tuple[float, dict]:
    """Peak RSS of one ingest: through ``ingest_paths``, or with ``command``
    the ``dmarclens ingest`` command itself (what the issue's targets are
    about: it also classifies, and keeps NumPy out of the process)."""
    res = subprocess.run([sys.executable, "-c", _MEASURE, str(db), "cli" if command else str(workers),
                          *map(str, inputs)], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout)
    assert out["rc"] == 0, out["err"]
    return out["peak_mb"], json.loads(out["out"])


@pytest.fixture(scope="module")
def big_50k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "google.com!example.com!big.xml"
    path.write_bytes(big_report_xml(50_000, 50_000, seed=1))
    return path


@pytest.fixture(scope="module")
def peak_50k(big_50k: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    peak, summary = ingest_peak(tmp_path_factory.mktemp("db50k") / "a.duckdb", [big_50k], command=True)
    assert summary["stored"] == 1 and summary["records"] == 50_000
    return peak


def test_a_50k_record_50k_ip_report_stays_under_200_mb(peak_50k: float) -> None:
    assert peak_50k <= 200, f"peak RSS {peak_50k:.0f} MB"


def test_a_200k_record_report_costs_no_more_than_one_duckdb_row_group_more(
        peak_50k: float, tmp_path: Path) -> None:
    """Four times the records, 97 MB more XML: neither the XML (read through a
    map, a window at a time) nor the rows (spilled to a file, inserted as one
    stream) are held whole. What remains is DuckDB's open row group (up to
    122,880 rows, ~35 MB here), which stops growing past that size."""
    path = tmp_path / "google.com!example.com!huge.xml"
    path.write_bytes(big_report_xml(200_000, 50_000, seed=2))
    xml_growth = path.stat().st_size / 2**20 - 32
    peak, summary = ingest_peak(tmp_path / "h.duckdb", [path], command=True)
    assert summary["stored"] == 1 and summary["records"] == 200_000
    assert peak <= 215, f"peak RSS {peak:.0f} MB"
    # Holding the XML (as before this test existed) grew the peak by ~100 MB.
    assert peak - peak_50k <= 50 < xml_growth, (peak, peak_50k, xml_growth)


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
