"""Write the labelled detection world to disk: report files by arrival day, plus the labels.

The world itself is built by ``dmarclens.generator.scenarios.benchmark_world``
(on the generator's simulator and renderer) so tests and the benchmark share
it; this script only materialises it for a person or another tool:

    python benchmarks/detection/world.py OUT_DIR [--seed 11]

gives ``OUT_DIR/inbox/YYYY-MM-DD/`` (files that arrived that UTC day: zip,
gzip, forwarded .eml, duplicates, re-sends, late batches, multi-day reports)
and ``OUT_DIR/labels.json`` (the scenarios: domain, first and last day, the
anomaly kinds that count as finding them, or none for must-not-alert).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dmarclens.generator.scenarios import benchmark_world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--history", type=int, default=42)
    ap.add_argument("--days", type=int, default=60)
    args = ap.parse_args()
    sw = benchmark_world(seed=args.seed, history_days=args.history, eval_days=args.days)
    for d in sw.deliveries:
        folder = args.out / "inbox" / d.arrival.date().isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / d.name).write_bytes(d.data)
    labels = {
        "seed": args.seed, "start": sw.world.start.isoformat(), "days": sw.world.days,
        "eval_start": sw.eval_start.isoformat() if sw.eval_start else None, "domains": sw.domains,
        "scenarios": [
            {"key": s.key, "title": s.title, "domain": s.domain, "start": s.start.isoformat(),
             "end": s.end.isoformat(), "kinds": list(s.kinds), "must_alert": s.must_alert,
             "max_delay_report_days": s.max_delay, "seed_case": s.seed_case}
            for s in sw.scenarios
        ],
    }
    (args.out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
    print(f"{len(sw.deliveries)} files in {args.out / 'inbox'}, labels in {args.out / 'labels.json'}")


if __name__ == "__main__":
    main()
