"""Post-ingest traffic classification: what the classification after an ingest costs.

    python benchmarks/classify.py big                 # fresh DB, one 50,000-record report
    python benchmarks/classify.py grown --copies 75   # ~1 M classified records, then a small new report
    python benchmarks/classify.py grown --db /tmp/dash10m-copy.duckdb   # any classified DB, then a small report

Every measurement runs in a fresh process, as the CLI does: the reports are
ingested with ``dmarclens.ingest.writer.ingest_paths`` and then
``dmarclens.ingest.followup.classify_hook`` (the step ``dmarclens ingest``
runs after its commit, on its connection) is timed alone. ``grown`` builds a template once: the
generated 60-day world from 2013-01-01 ingested, its records copied into later
weeks with SQL (same sources, new days), classified; each run copies the
template, ingests one small report for the day after the newest (or, with
``--late``, for the oldest day stored) and times the classification.

Prints one line per run; results are recorded in benchmarks/enrich.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("DMARCLENS_BENCH_DIR", "/tmp/dmarclens-bench-classify"))

_CHILD = r"""
import sys, time
from pathlib import Path
from dmarclens.core.config import load_settings
from dmarclens.ingest.followup import classify_hook
from dmarclens.ingest.writer import ingest_paths
from dmarclens.sources.mailauth import configure
from dmarclens.store.db import open_db

db, inputs = Path(sys.argv[1]), sys.argv[2:]
settings = load_settings(db=str(db))
configure(settings)
t0 = time.perf_counter()
summary = ingest_paths(inputs, db)
t1 = time.perf_counter()
with open_db(db) as con:
    classify_hook(settings, lambda message: print(message, file=sys.stderr))(con)
t2 = time.perf_counter()
print(f"{summary.records} {t1 - t0:.3f} {t2 - t1:.3f} {'pandas' in sys.modules}")
"""


def _run_child(db: Path, inputs: list[Path]) -> tuple[int, float, float, bool]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(db), *map(str, inputs)], check=True,
                         capture_output=True, text=True, cwd=WORK).stdout.splitlines()[-1].split()
    return int(out[0]), float(out[1]), float(out[2]), out[3] == "True"


def _records(db: Path) -> int:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM records").fetchone()[0])  # type: ignore[index]


def bench_big(runs: int) -> None:
    from dmarclens.generator import big_report_xml

    xml = WORK / "big50k.xml"
    if not xml.exists():
        xml.write_bytes(big_report_xml(50_000, 50_000))
    for _ in range(runs):
        db = WORK / "big.duckdb"
        db.unlink(missing_ok=True)
        n, ingest_s, classify_s, pandas = _run_child(db, [xml])
        print(f"fresh DB, one report: {n} records ingested in {ingest_s:.2f}s; "
              f"classification {classify_s:.3f}s; pandas imported: {pandas}")


def _template(copies: int) -> Path:
    """A classified DB of the generated world copied ``copies`` times into later weeks."""
    from dmarclens.generator import build_world, render_report
    from dmarclens.store.db import open_db

    db = WORK / f"grown-{copies}.duckdb"
    if not db.exists():
        world = build_world(7, 60, date(2013, 1, 1))
        folder = WORK / "world"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for n, spec in enumerate(world.reports):
            (folder / f"{n:06d}.xml").write_bytes(render_report(spec))
        tmp = db.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        from dmarclens.ingest.writer import ingest_paths

        ingest_paths([folder], tmp)
        with open_db(tmp) as con:
            span = con.execute("SELECT max(day) - min(day) + 1 FROM records").fetchone()[0]  # type: ignore[index]
            first = con.execute("SELECT min(day) FROM records").fetchone()[0]  # type: ignore[index]
            for k in range(1, copies):
                con.execute("INSERT INTO records SELECT * REPLACE (day + ? AS day) FROM records "
                            "WHERE day < ? + ?", [k * span, first, span])
        # Classify the whole template once (the step being measured then sees a classified DB).
        subprocess.run([sys.executable, "-c", "import sys; from dmarclens.enrich.rdns import enrich_db; "
                        "enrich_db(sys.argv[1], resolve=False)", str(tmp)], check=True)
        tmp.rename(db)
    return db


def _small_report(day: date, tag: str, domain: str) -> Path:
    """One report of the generated world (its biggest daily one for example.com), moved to ``day``
    and renamed to ``domain`` (one the database already has: a new domain would change the
    owned-domain list and so rebuild the lookalike table, which is not the common case)."""
    from datetime import UTC, datetime

    from dmarclens.generator import build_world, render_report

    world = build_world(7, 3, date(2013, 1, 1))
    spec = max((s for s in world.reports if s.end - s.begin < 86400 + 10 and s.policy.domain == "example.com"),
               key=lambda s: len(s.records))
    begin = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    spec = dataclasses.replace(spec, begin=begin, end=begin + (spec.end - spec.begin),
                               report_id=f"bench-{tag}-{day.isoformat()}")
    path = WORK / f"small-{tag}.xml"
    path.write_bytes(render_report(spec).replace(b"example.com", domain.encode()))
    return path


def bench_grown(copies: int, runs: int, late: bool, db_in: Path | None) -> None:
    from datetime import timedelta

    import duckdb

    template = db_in if db_in is not None else _template(copies)
    with duckdb.connect(str(template), read_only=True) as con:
        first, last = con.execute("SELECT min(day), max(day) FROM records").fetchone()  # type: ignore[misc]
        domain = con.execute("SELECT domain FROM reports ORDER BY end_ts DESC, domain LIMIT 1").fetchone()[0]  # type: ignore[index]
    total = _records(template)
    for i in range(runs):
        day = first if late else last + timedelta(days=1)
        report = _small_report(day, f"{'late' if late else 'new'}{i}", domain)
        db = WORK / "grown-run.duckdb"
        shutil.copy(template, db)
        n, ingest_s, classify_s, _ = _run_child(db, [report])
        print(f"{total:,} records stored, +{n} {'late' if late else 'new'} records ({day}): "
              f"ingest {ingest_s:.2f}s; classification {classify_s:.3f}s")
        db.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["big", "grown"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--copies", type=int, default=75, help="grown: copies of the 60-day world (75 ≈ 1 M records)")
    ap.add_argument("--late", action="store_true", help="grown: the new report is for the oldest day stored")
    ap.add_argument("--db", type=Path, default=None, help="grown: start from this classified DB (copied)")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d')}, tmp {tempfile.gettempdir()}")
    if args.what == "big":
        bench_big(args.runs)
    else:
        bench_grown(args.copies, args.runs, args.late, args.db)


if __name__ == "__main__":
    main()
