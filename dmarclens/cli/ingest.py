"""`dmarclens ingest`: files and folders into the database, then traffic classes."""

from __future__ import annotations

import json
import sys

import click

from dmarclens.cli.common import (
    Progress,
    config_option,
    configure_security,
    db_option,
    own_process,
    run_guarded,
    warn,
)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@db_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--enrich", "with_enrich", is_flag=True,
              help="After storing, run `dmarclens enrich` ([enrich] config); DNS trouble never loses reports.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes that parse reports (0 = one per core); one process always writes. "
                   "Inputs of fewer than 64 reports are parsed in-process.")
def ingest(paths: tuple[str, ...], db: str | None, config: str | None, as_json: bool, with_enrich: bool,
           workers: int) -> None:
    """Ingest report files and folders into the database.

    PATHS may be .xml, .xml.gz/.gz, .zip report files, saved report mail
    (.eml: attached, inline, whole-body gzip or forwarded), mbox files, Maildir
    folders, or folders of any of these (searched recursively).

    Each rejected input gets one line on stderr naming it and the reason; the
    run goes on, the file is left untouched and the reason is recorded in the
    ingest_items table. Exit 0 when every input was stored or was a duplicate,
    3 when some were rejected, 1 when the run could not happen at all.

    \b
    Example:
      dmarclens ingest ~/dmarc-reports/ --db reports.duckdb
      dmarclens ingest report.xml.gz inbox.mbox --json
      dmarclens ingest ~/dmarc-reports/ --enrich
      dmarclens ingest ~/dmarc-archive/ --workers 2
    """
    from dmarclens.core.config import load_settings
    from dmarclens.ingest.followup import classify_hook
    from dmarclens.ingest.writer import ingest_paths

    settings = run_guarded(load_settings, config=config, db=db)
    configure_security(settings)
    if own_process() and not with_enrich:  # parse, store, classify, exit: nothing converts to NumPy
        from dmarclens.core.arrow import declare_numpy_free

        declare_numpy_free()
    progress = Progress(enabled=not as_json)
    summary = run_guarded(
        ingest_paths, paths, settings.db, lock_timeout=settings.lock_timeout, progress=progress,
        workers=workers, after_commit=None if with_enrich else classify_hook(settings, warn),
    )
    progress.done()
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        click.echo(
            f"{summary.stored} stored, {summary.duplicates} duplicates, {summary.rejected} rejected, "
            f"{summary.ignored} other report kinds; {summary.records} records, {summary.messages} messages "
            f"in {summary.seconds:.1f}s → {settings.db}",
            err=True,
        )
    if with_enrich:
        from dmarclens.cli.enrich import enrich_after_ingest

        enrich_after_ingest(settings)
    sys.exit(summary.exit_code)
