"""`dmarclens demo`: the sample reports into a local database, classified and
detected, then the dashboard."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dmarclens.cli.common import Progress, configure_security, db_option, resolve_db, run_guarded, warn
from dmarclens.cli.dashboard import launch_dashboard
from dmarclens.core.errors import DmarcLensError


@click.command()
@db_option
@click.option("--samples", type=click.Path(file_okay=False), default=None,
              help="Folder of reports to load (default: ./sample_reports, else freshly generated samples).")
@click.option("--dashboard/--no-dashboard", "with_dashboard", default=True, help="Open the dashboard afterwards.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8501, show_default=True, type=int)
def demo(db: str | None, samples: str | None, with_dashboard: bool, host: str, port: int) -> None:
    """Ingest the sample reports into a local DuckDB file and open the dashboard.

    The samples are made by dmarclens' own generator: 60 days, 3 domains,
    realistic receivers and senders, and a few stories worth finding (one is a
    burst of mail that passes DMARC through the domain's own provider).

    \b
    Example:
      dmarclens demo
      dmarclens demo --db /tmp/demo.duckdb --no-dashboard
    """
    from dmarclens.ingest.followup import classify_hook
    from dmarclens.ingest.writer import ingest_paths

    path = resolve_db(db)
    folder = Path(samples) if samples else Path("sample_reports")
    if not folder.is_dir():
        import tempfile

        from dmarclens.generator import write_samples

        folder = Path(tempfile.mkdtemp(prefix="dmarclens-samples-"))
        click.echo(f"dmarclens: no ./sample_reports here; generating samples into {folder}", err=True)
        write_samples(folder)
    from dmarclens.core.config import load_settings

    settings = run_guarded(load_settings, db=str(path))
    configure_security(settings)
    progress = Progress(enabled=True)
    summary = run_guarded(ingest_paths, [folder], path, command="demo", progress=progress,
                          after_commit=classify_hook(settings, warn))
    progress.done()
    click.echo(
        f"dmarclens: {summary.stored} reports stored ({summary.duplicates} already there), "
        f"{summary.records} records, {summary.messages} messages → {path}",
        err=True,
    )
    _post_ingest_hooks(path)
    if with_dashboard:
        sys.exit(launch_dashboard(path, host, port))
    sys.exit(summary.exit_code)


def _post_ingest_hooks(path: Path) -> None:
    """Run detection after the demo ingest, so the demo shows findings."""
    from dmarclens.detect.run import detect_and_store

    try:
        detect_and_store(path)
    except DmarcLensError as e:
        click.echo(f"dmarclens: warning: detection skipped: {e}", err=True)
