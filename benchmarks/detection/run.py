"""Labelled detection benchmark: replay a world day by day through the real CLI.

Why day by day: a detector judged once over finished data never sees what a
cron job sees -- yesterday's reports half arrived, a reporter three days
late, a weekly report landing at once, a duplicate forwarded a day later.
This runner plays the rua mailbox forward: every report-day it writes the
files that *arrived* by noon UTC of the next day, runs ``dmarclens ingest``
on them and ``dmarclens detect --format json`` on the whole database, and
remembers when each labelled scenario was first reported at ``medium`` or
above (the default alert threshold).

Printed (and written as JSON with --out): per scenario whether it was
detected, the delay in report-days after its first day (0 = found on the
first run that could see that day), its severity; and false alerts per
domain-month (alerts matching no abuse scenario).

    python benchmarks/detection/run.py            # ~5 minutes on 2 cores
    python benchmarks/detection/run.py --out benchmarks/detection/result.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from dmarclens.detect.model import RANK
from dmarclens.generator.scenarios import ScenarioWorld, benchmark_world, match

ALERT = RANK["medium"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("DMARCLENS_DB", None)
    env.pop("DMARCLENS_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "dmarclens", *args], capture_output=True, text=True, env=env,
                          check=False)


def cutoff(day: date) -> datetime:
    """The moment a daily cron run for ``day`` happens: noon UTC the day after."""
    return datetime.combine(day + timedelta(days=1), dtime(12, 0), UTC)


def replay(sw: ScenarioWorld, work: Path, *, verbose: bool = False) -> dict[str, Any]:
    db = work / "bench.duckdb"
    inbox = work / "inbox"
    days = sw.world.days
    e0 = (sw.eval_start - sw.world.start).days if sw.eval_start else 0
    runs: list[dict[str, Any]] = []
    prev: datetime | None = None
    ingest_s = detect_s = 0.0
    for k in range(e0 - 1, days):
        cut = cutoff(sw.day(k))
        folder = inbox / f"day-{k:03d}"
        files = sw.write_until(folder, cut, after=prev)
        prev = cut
        if files:
            t = time.monotonic()
            r = cli("ingest", str(folder), "--db", str(db), "--json")
            ingest_s += time.monotonic() - t
            if r.returncode not in (0,):
                raise SystemExit(f"ingest failed on day {k}: {r.stderr}")
        if k < e0:
            continue  # history only: the first judged run is for the first evaluation day
        t = time.monotonic()
        r = cli("detect", "--db", str(db), "--format", "json")
        detect_s += time.monotonic() - t
        if r.returncode != 0:
            raise SystemExit(f"detect failed on day {k}: {r.stderr}")
        found = json.loads(r.stdout)
        runs.append({"k": k, "day": sw.day(k).isoformat(), "anomalies": found})
        if verbose:
            hot = [a for a in found if RANK[a["severity"]] >= ALERT]
            print(f"  day {sw.day(k)}: {len(files)} files, {len(found)} anomalies, {len(hot)} >= medium",
                  file=sys.stderr)
    return {"runs": runs, "ingest_seconds": ingest_s, "detect_seconds": detect_s, "e0": e0}


def score(sw: ScenarioWorld, replayed: dict[str, Any]) -> dict[str, Any]:
    runs = replayed["runs"]
    start = sw.world.start
    latest: dict[str, dict[str, Any]] = {}
    max_rank: dict[str, int] = {}
    for run in runs:
        for a in run["anomalies"]:
            latest[a["id"]] = a
            max_rank[a["id"]] = max(max_rank.get(a["id"], -1), RANK[a["severity"]])
    rows = []
    for s in sw.scenarios:
        if not s.must_alert:
            continue
        first_k = None
        best: dict[str, Any] | None = None
        for run in runs:
            hits = [a for a in run["anomalies"] if match(s, a) and RANK[a["severity"]] >= ALERT]
            if hits and first_k is None:
                first_k = run["k"]
            for a in hits:
                if best is None or RANK[a["severity"]] > RANK[best["severity"]]:
                    best = a
        s_index = (s.start - start).days
        delay = None if first_k is None else first_k - s_index
        kinds = sorted({a["kind"] for a in latest.values() if match(s, a) and max_rank[a["id"]] >= ALERT})
        rows.append({
            "scenario": s.key, "title": s.title, "domain": s.domain, "start": s.start.isoformat(),
            "detected": first_k is not None and delay is not None and delay <= s.max_delay,
            "found": first_k is not None, "delay": delay, "max_delay": s.max_delay,
            "severity": best["severity"] if best else None, "kinds": kinds, "seed_case": s.seed_case,
        })
    # False alerts: anomalies that reached medium and match no abuse scenario.
    abuse = [s for s in sw.scenarios if s.must_alert]
    false: list[dict[str, Any]] = []
    for aid, a in latest.items():
        if max_rank[aid] < ALERT:
            continue
        if any(match(s, a) for s in abuse):
            continue
        false.append({"id": aid, "domain": a["domain"], "kind": a["kind"], "severity": a["severity"],
                      "first_day": a["first_day"], "explanation": a["explanation"]})
    eval_days = len(runs)
    domain_months = len(sw.domains) * eval_days / 30.0
    per_domain = {d: sum(1 for f in false if f["domain"] == d) for d in sw.domains}
    quiet = []
    for s in sw.scenarios:
        if s.must_alert:
            continue
        n = sum(1 for f in false if f["domain"] == s.domain)
        quiet.append({"scenario": s.key, "title": s.title, "domain": s.domain, "false_alerts": n})
    return {
        "scenarios": rows, "quiet": quiet, "false_alerts": false, "false_per_domain": per_domain,
        "false_per_domain_month": len(false) / domain_months if domain_months else 0.0,
        "domain_months": domain_months, "eval_days": eval_days,
        "ingest_seconds": round(replayed["ingest_seconds"], 1),
        "detect_seconds": round(replayed["detect_seconds"], 1),
        "detect_runs": eval_days,
    }


def render(result: dict[str, Any]) -> str:
    lines = ["| scenario | domain | detected | delay (report-days) | target | severity | kinds |",
             "|---|---|---|---|---|---|---|"]
    for r in result["scenarios"]:
        det = "yes" if r["detected"] else ("late" if r["found"] else "no")
        delay = "-" if r["delay"] is None else str(r["delay"])
        lines.append(f"| ({r['scenario']}) {r['title']} | {r['domain']} | {det} | {delay} | <= {r['max_delay']} "
                     f"| {r['severity'] or '-'} | {', '.join(r['kinds']) or '-'} |")
    for q in result["quiet"]:
        lines.append(f"| ({q['scenario']}) {q['title']} | {q['domain']} | {q['false_alerts']} false alerts "
                     f"| - | 0 | - | - |")
    lines.append("")
    lines.append(f"False alerts (>= medium, matching no abuse scenario): {len(result['false_alerts'])} over "
                 f"{result['domain_months']:.1f} domain-months = **{result['false_per_domain_month']:.2f} per "
                 f"domain-month** (target <= 1).")
    seed = [r for r in result["scenarios"] if r["seed_case"]]
    if seed:
        lines.append(f"Seed scenario (a) ranked **{seed[0]['severity']}** (target high or critical).")
    lines.append(f"{result['detect_runs']} daily detect runs: {result['detect_seconds']:.0f} s in detect, "
                 f"{result['ingest_seconds']:.0f} s in ingest (CLI processes included).")
    for f in result["false_alerts"]:
        lines.append(f"- false alert: {f['domain']} {f['kind']} {f['severity']} {f['first_day']}: {f['explanation']}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--history", type=int, default=42, help="days of history before the evaluation period")
    ap.add_argument("--days", type=int, default=60, help="evaluation days (one detect run each)")
    ap.add_argument("--out", type=Path, default=None, help="write the full result as JSON here")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    sw = benchmark_world(seed=args.seed, history_days=args.history, eval_days=args.days)
    print(f"world: {len(sw.domains)} domains, {len(sw.world.reports)} reports, {len(sw.deliveries)} deliveries, "
          f"{len(sw.scenarios)} labelled scenarios", file=sys.stderr)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        replayed = replay(sw, args.keep, verbose=args.verbose)
    else:
        with tempfile.TemporaryDirectory(prefix="dmarclens-bench-") as tmp:
            replayed = replay(sw, Path(tmp), verbose=args.verbose)
    result = score(sw, replayed)
    result["wall_seconds"] = round(time.monotonic() - t0, 1)
    result["seed"] = args.seed
    print(render(result))
    if args.out:
        args.out.write_text(json.dumps({k: v for k, v in result.items()}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
