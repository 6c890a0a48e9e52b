"""`dmarclens export`: hand the data to engines beyond one DuckDB file.

Only argument handling and output live here; the work is in
``dmarclens.query.export``.
"""

from __future__ import annotations

import json
from datetime import date, datetime

import click

from dmarclens.cli.common import config_option, db_option, resolve_db, run_guarded


def _day(ctx: click.Context, param: click.Parameter, value: datetime | None) -> date | None:
    return value.date() if value else None


@click.group()
def export() -> None:
    """Export stored records for other tools (Spark, Trino, DuckDB over files).

    \b
    Example:
      dmarclens export parquet ./lake --db reports.duckdb
    """


@export.command("parquet")
@click.argument("out_dir", type=click.Path(file_okay=False))
@db_option
@config_option
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, callback=_day,
              help="First day to export (YYYY-MM-DD; default: the oldest).")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, callback=_day,
              help="Last day to export (YYYY-MM-DD; default: the newest).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
def parquet(out_dir: str, db: str | None, config: str | None, since: date | None, until: date | None,
            as_json: bool) -> None:
    """Write v_records as Hive-partitioned Parquet: OUT_DIR/day=YYYY-MM-DD/domain=NAME/*.parquet.

    Incremental and idempotent: only (day, domain) partitions whose rows
    changed since the last export are rewritten (a fingerprint per partition
    is kept in OUT_DIR/_dmarclens_export.json); partitions whose rows left the
    database are removed; running it again with no new data writes nothing.
    The columns are those of v_records (day and domain come from the folder
    names). The database is only read. See docs/scale.md for querying the
    lake with DuckDB, Spark or Trino.

    \b
    Example:
      dmarclens export parquet ./lake --db reports.duckdb
      dmarclens export parquet s3-mount/dmarc --since 2026-10-01 --json
    """
    from dmarclens.query.export import export_parquet

    if since and until and since > until:
        raise click.UsageError("--since is after --until")
    path = resolve_db(db, config)
    result = run_guarded(export_parquet, path, out_dir, since=since, until=until)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(
            f"{result.written} partitions written ({result.rows} rows), {result.unchanged} unchanged, "
            f"{result.removed} removed → {result.out_dir}",
            err=True,
        )
