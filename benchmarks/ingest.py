"""Ingest speed and memory: dmarclens vs parsedmarc, side by side in one run.

    python benchmarks/ingest.py [--quick] [--workdir DIR] [--markdown FILE]

Cases (inputs made by ``dmarclens.generator``):

  a. one report with 50,000 records from 50,000 distinct IPs (~32 MB of XML)
  b. one report with 200,000 records (~130 MB of XML)
  c. a folder of 10,000 small reports (.zip/.xml.gz/.xml, 1-20 records each)
  d. the project's sample_reports/ (files, mail, mbox)
  e. dmarclens alone on reports of 100,000 and 250,000 records (50,000 IPs):
     with a and b, peak memory against report size

dmarclens runs as users run it: the ``dmarclens ingest`` command in its own
process, into a fresh DuckDB file (parse, offline enrichment, store, commit;
``--workers 1`` and the default pool for case c). parsedmarc runs
``parse_report_file(path, offline=True)`` (``get_dmarc_reports_from_mbox`` for
mbox files) over the same inputs in its own process; that parses only, it
stores nothing. Each process is measured from outside: wall time and peak RSS
(``ru_maxrss`` of the process and anything it forked). dmarclens runs each
case three times (``--repeat``): the median wall time and the highest peak
RSS are shown. The ratio column is parsedmarc's time divided by dmarclens'
for the same records.

The machine is shared: compare ratios measured in the same run, and rerun
when the load average is low.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Run `cmd`, then report its wall time and the peak RSS of it and its children.
_MEASURE = textwrap.dedent("""
    import json, resource, subprocess, sys, time
    out, cmd = sys.argv[1], sys.argv[2:]
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    json.dump({"wall": wall, "peak_kb": peak, "rc": proc.returncode, "stdout": proc.stdout,
               "stderr": proc.stderr[-2000:]}, open(out, "w"))
""")

# parsedmarc over files and mbox files, counting aggregate reports and records.
_PARSEDMARC = textwrap.dedent("""
    import json, logging, os, sys, time
    logging.disable(logging.CRITICAL)
    t0 = time.perf_counter()
    import parsedmarc
    t1 = time.perf_counter()
    reports = records = failed = 0
    paths = []
    for arg in sys.argv[2:]:
        if os.path.isdir(arg):
            for root, dirs, files in os.walk(arg):
                dirs.sort()
                paths += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".") and f != "README.md"]
        else:
            paths.append(arg)
    limit = int(sys.argv[1])
    paths = paths[:limit] if limit else paths
    for path in paths:
        try:
            if path.endswith(".mbox"):
                res = parsedmarc.get_dmarc_reports_from_mbox(path, offline=True)
                aggs = res["aggregate_reports"]
            else:
                res = parsedmarc.parse_report_file(path, offline=True)
                aggs = [res["report"]] if res["report_type"] == "aggregate" else []
        except Exception:
            failed += 1
            continue
        reports += len(aggs)
        records += sum(len(a["records"]) for a in aggs)
    print(json.dumps({"reports": reports, "records": records, "failed": failed, "files": len(paths),
                      "import_s": t1 - t0, "parse_s": time.perf_counter() - t1}))
""")


@dataclass
class Run:
    """One measured process."""

    label: str
    wall: float
    peak_mb: float
    records: int
    detail: dict

    @property
    def rate(self) -> float:
        return self.records / self.wall if self.wall else 0.0


def measure(cmd: list[str], *, env: dict[str, str] | None = None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    try:
        subprocess.run([sys.executable, "-c", _MEASURE, out, *cmd], check=True, env=env)
        with open(out) as fh:
            return json.load(fh)
    finally:
        os.unlink(out)


REPEAT = 3
"""dmarclens runs of each case; the table shows the median wall time and the
highest peak RSS of them (set by ``--repeat``)."""


def dmarclens_ingest(label: str, inputs: list[Path], work: Path, *extra: str) -> Run:
    runs = sorted((_dmarclens_once(label, inputs, work, *extra) for _ in range(REPEAT)), key=lambda r: r.wall)
    median = runs[len(runs) // 2]
    median.peak_mb = max(r.peak_mb for r in runs)
    median.detail["walls"] = [round(r.wall, 2) for r in runs]
    return median


def dmarclens_pair(inputs: list[Path], work: Path) -> tuple[Run, Run, list[float]]:
    """One worker and the pool, run alternately (so both see the same
    moments of a noisy machine): their medians and the ratio of each pair."""
    ones, pools = [], []
    for _ in range(REPEAT):
        ones.append(_dmarclens_once("ingest --workers 1", inputs, work, "--workers", "1"))
        pools.append(_dmarclens_once("ingest (pool, default)", inputs, work))
    ratios = sorted(round(a.wall / b.wall, 2) for a, b in zip(ones, pools, strict=True))
    out = []
    for runs in (ones, pools):
        by_wall = sorted(runs, key=lambda r: r.wall)
        median = by_wall[len(by_wall) // 2]
        median.peak_mb = max(r.peak_mb for r in runs)
        median.detail["walls"] = [round(r.wall, 2) for r in runs]
        out.append(median)
    return out[0], out[1], ratios


def _dmarclens_once(label: str, inputs: list[Path], work: Path, *extra: str) -> Run:
    db = work / f"{label.replace(' ', '_').replace(',', '')}.duckdb"
    for stale in work.glob(db.name + "*"):
        stale.unlink()
    env = dict(os.environ)
    env.pop("DMARCLENS_DB", None)
    env.pop("DMARCLENS_CONFIG", None)
    res = measure([sys.executable, "-m", "dmarclens", "ingest", *map(str, inputs), "--db", str(db), "--json", *extra],
                  env=env)
    if res["rc"] not in (0, 3):
        raise SystemExit(f"dmarclens ingest failed ({res['rc']}): {res['stderr']}")
    summary = json.loads(res["stdout"])
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    parsers = dict(con.execute("SELECT parser, count(*) FROM reports GROUP BY 1").fetchall())
    con.close()
    detail = {"stored": summary["stored"], "rejected": len(summary["rejected"]),
              "duplicates": summary["duplicates"], "parsers": parsers, "pipeline_s": summary["seconds"]}
    return Run(f"dmarclens {label}", res["wall"], res["peak_kb"] / 1024, summary["records"], detail)


def parsedmarc_parse(label: str, inputs: list[Path], *, limit: int = 0) -> Run:
    res = measure([sys.executable, "-c", _PARSEDMARC, str(limit), *map(str, inputs)])
    if res["rc"] != 0:
        raise SystemExit(f"parsedmarc run failed: {res['stderr']}")
    out = json.loads(res["stdout"].strip().splitlines()[-1])
    return Run(f"parsedmarc {label}", res["wall"], res["peak_kb"] / 1024, out["records"], out)


# --------------------------------------------------------------------------- inputs


def make_inputs(work: Path, *, quick: bool) -> dict[str, Path]:
    from dmarclens.generator import big_report_xml, many_small_reports

    sizes = {"big": (5_000, 5_000), "huge": (20_000, 5_000), "small": 300,
             "scale": [(10_000, 5_000), (25_000, 5_000)]} if quick else {
        "big": (50_000, 50_000), "huge": (200_000, 50_000), "small": 10_000,
        "scale": [(100_000, 50_000), (250_000, 50_000)]}
    paths = {}
    for i, (records, ips) in enumerate(sizes["scale"]):
        path = work / f"scale-{records}.xml"
        if not path.exists():
            path.write_bytes(big_report_xml(records, ips, seed=10 + i))
        paths[f"scale{i}"] = path
    big = work / f"big-{sizes['big'][0]}.xml"
    if not big.exists():
        big.write_bytes(big_report_xml(*sizes["big"], seed=1))
    paths["big"] = big
    huge = work / f"huge-{sizes['huge'][0]}.xml"
    if not huge.exists():
        huge.write_bytes(big_report_xml(*sizes["huge"], seed=2))
    paths["huge"] = huge
    small = work / f"small-{sizes['small']}"
    if not small.is_dir():
        tmp = work / "small.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, data in many_small_reports(sizes["small"], seed=3):
            (tmp / name).write_bytes(data)
        tmp.rename(small)
    paths["small"] = small
    paths["samples"] = REPO / "sample_reports"
    return paths


# --------------------------------------------------------------------------- report


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def available_parallelism(n: int = 15_000_000) -> tuple[float, float]:
    """How much faster two processes burn CPU than one, right now, and how
    long one pass of the loop took on one core.

    The machine is shared: when other work holds a core, no pool can be
    twice as fast, so the pool's speed-up is printed next to this one. The
    one-core time is this VM's speed at the moment: it drifts by 10 % and
    more over a day, and every absolute records/s figure drifts with it.
    """
    import multiprocessing

    t = time.perf_counter()
    _burn(n)
    _burn(n)
    serial = time.perf_counter() - t
    with multiprocessing.get_context("fork").Pool(2) as pool:
        t = time.perf_counter()
        pool.map(_burn, [n, n])
        parallel = time.perf_counter() - t
    return serial / parallel, serial / 2


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    import duckdb
    import lxml.etree
    import pyarrow

    from dmarclens.core.version import __version__

    try:
        from importlib.metadata import version
        pd_version = version("parsedmarc")
    except Exception:  # noqa: BLE001 - only for the label
        pd_version = "?"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores{mem}; {platform.system()} {platform.release()}; Python {platform.python_version()}, "
            f"dmarclens {__version__}, parsedmarc {pd_version}, DuckDB {duckdb.__version__}, "
            f"lxml {'.'.join(map(str, lxml.etree.LXML_VERSION[:3]))}, pyarrow {pyarrow.__version__}")


def table(rows: list[tuple[str, Run, Run | None]]) -> str:
    lines = [
        "| case | tool | records | wall (s) | of which parse+store (s) | records/s | peak RSS (MB) "
        "| parsedmarc time / dmarclens time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case, run, reference in rows:
        ratio = ""
        if reference is not None and run.rate and reference.rate:
            ratio = f"**{run.rate / reference.rate:.1f}×**"
        inner = run.detail.get("pipeline_s")
        inner_text = f"{inner:.2f}" if isinstance(inner, (int, float)) else ""
        lines.append(f"| {case} | {run.label} | {run.records:,} | {run.wall:.2f} | {inner_text} | {run.rate:,.0f} | "
                     f"{run.peak_mb:.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small inputs (smoke test of this script)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dmarclens-bench-ingest")
    ap.add_argument("--markdown", type=Path, help="also write the table and machine line to this file")
    ap.add_argument("--small-parsedmarc", type=int, default=1000,
                    help="parsedmarc parses only this many of the small reports (its rate is per record)")
    ap.add_argument("--skip-huge-parsedmarc", action="store_true",
                    help="do not run parsedmarc on the 200,000-record report (it needs ~2 GB and minutes)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="dmarclens runs per case: the median wall time and the highest peak RSS are shown")
    args = ap.parse_args()
    global REPEAT  # noqa: PLW0603 - a setting of this script's one run
    REPEAT = max(1, args.repeat)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    # Bytecode as an installed package has it (pip compiles at install): in a
    # checkout, modules changed since their .pyc was written would otherwise
    # be compiled again by every run (under PYTHONDONTWRITEBYTECODE, as here).
    import compileall

    import dmarclens

    compileall.compile_dir(str(Path(dmarclens.__file__).parent), quiet=1)
    load_before = os.getloadavg()
    burn_before, core_before = available_parallelism()
    t0 = time.time()
    inputs = make_inputs(work, quick=args.quick)
    print(f"inputs ready in {time.time() - t0:.0f}s in {work}", file=sys.stderr)

    rows: list[tuple[str, Run, Run | None]] = []

    def case(name: str, ours: list[Run], theirs: Run | None) -> None:
        if theirs is not None:
            rows.append((name, theirs, None))
        for run in ours:
            rows.append((name, run, theirs))
        for run in ([theirs] if theirs else []) + ours:
            print(f"  {name}: {run.label}: {run.records:,} records in {run.wall:.2f}s, "
                  f"{run.peak_mb:.0f} MB, {run.detail}", file=sys.stderr)

    big = inputs["big"]
    case("a. one report, 50k records / 50k IPs" if not args.quick else "a. big report",
         [dmarclens_ingest("ingest", [big], work)], parsedmarc_parse("parse_report_file", [big]))
    huge = inputs["huge"]
    theirs = None if args.skip_huge_parsedmarc else parsedmarc_parse("parse_report_file", [huge])
    case("b. one report, 200k records" if not args.quick else "b. huge report",
         [dmarclens_ingest("ingest", [huge], work)], theirs)
    # Memory against report size, at the same 50,000 IPs (dmarclens only):
    # with a and b, the peak for 50k, 100k, 200k and 250k records.
    for key in ("scale0", "scale1"):
        path = inputs[key]
        n = int(path.stem.split("-")[1])
        case(f"e. peak RSS vs size: {n // 1000}k records / 50k IPs" if not args.quick else f"e. {n:,} records",
             [dmarclens_ingest("ingest", [path], work)], None)
    small = inputs["small"]
    n_small = len(list(small.iterdir()))
    limit = min(args.small_parsedmarc, n_small)
    one, pool, pair_ratios = dmarclens_pair([small], work)
    case(f"c. {n_small:,} small reports", [one, pool],
         parsedmarc_parse(f"parse_report_file ({limit:,} of the files)", [small], limit=limit))
    case("d. sample_reports/", [dmarclens_ingest("ingest", [inputs["samples"]], work)],
         parsedmarc_parse("parse_report_file / mbox", [inputs["samples"]]))

    load_after = os.getloadavg()
    burn_after, core_after = available_parallelism()
    small_runs = [run for case_name, run, _ in rows if case_name.startswith("c.") and run.label.startswith("dmarclens")]
    pool_line = ""
    if len(small_runs) == 2 and small_runs[1].wall:
        pool_line = (f"Pool vs one worker on the small reports: {small_runs[0].wall / small_runs[1].wall:.2f}× "
                     f"(medians; the {len(pair_ratios)} runs alternated one worker / pool, pair by pair: "
                     f"{', '.join(f'{r:.2f}×' for r in pair_ratios)}). "
                     f"Two processes burning CPU were {burn_before:.2f}× / {burn_after:.2f}× faster than one, "
                     "before / after the run: the parallelism the machine had to give.")
    text = "\n".join([
        table(rows),
        "",
        pool_line,
        "",
        f"Machine: {machine()}. Speed index (15 M iterations of a Python loop on one core, lower is faster): "
        f"{core_before:.2f} s before, {core_after:.2f} s after.",
        f"Load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}; run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
    ])
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
