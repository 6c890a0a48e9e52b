"""Regenerate ``sample_reports/`` from the project's report generator.

Usage: ``python scripts/make_samples.py [OUT_DIR] [--seed N] [--days N] [--start YYYY-MM-DD]``.
The defaults reproduce the committed set byte for byte.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from dmarclens.generator import write_samples

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=ROOT / "sample_reports")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 9, 1))
    args = parser.parse_args()
    paths = write_samples(args.out_dir, seed=args.seed, days=args.days, start=args.start)
    size = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files, {size / 1024 / 1024:.2f} MB, to {args.out_dir}")


if __name__ == "__main__":
    main()
