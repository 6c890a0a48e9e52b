"""`dmarclens generate`: realistic sample reports from the project's own generator."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", default=7, show_default=True, help="Same seed, byte-identical output.")
@click.option("--days", default=60, show_default=True, help="Days of reports to generate.")
@click.option("--start", default="2026-09-01", show_default=True, help="First day (YYYY-MM-DD).")
def generate(out_dir: str, seed: int, days: int, start: str) -> None:
    """Write realistic, deterministic sample reports into OUT_DIR.

    Several receivers with their real habits (file naming, gz/zip/eml wrappers,
    RFC 9990, multi-day and duplicate reports), three domains, realistic
    senders, and embedded stories such as a burst of DMARC-passing mail through
    the domain's own provider from never-seen IPs.

    \b
    Example:
      dmarclens generate /tmp/reports --days 90 --seed 1
      dmarclens ingest /tmp/reports --db demo.duckdb
    """
    from dmarclens.generator import write_samples

    try:
        first = date.fromisoformat(start)
    except ValueError as e:
        raise click.BadParameter(f"{start!r} is not a YYYY-MM-DD date", param_hint="--start") from e
    paths = write_samples(Path(out_dir), seed=seed, days=days, start=first)
    click.echo(f"wrote {len(paths)} files to {out_dir}", err=True)
