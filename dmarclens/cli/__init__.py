"""The `dmarclens` command line: parse arguments, call one library function,
format the result. No business logic lives here.

One module per command (``cli/ingest.py``, ``cli/fetch.py`` ...); what they
share (exit codes, options, one-line errors) is in ``cli/common.py``.
Commands are loaded on first use, through the functions in ``COMMANDS``, so
`dmarclens ingest` from cron does not pay for importing the dashboard,
detector or DNS stacks.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from dmarclens.cli.common import mark_own_process, setup_logging
from dmarclens.core.version import __version__


def _ingest() -> click.Command:
    from dmarclens.cli.ingest import ingest

    return ingest


def _fetch() -> click.Command:
    from dmarclens.cli.fetch import fetch

    return fetch


def _query() -> click.Command:
    from dmarclens.cli.query import query

    return query


def _dashboard() -> click.Command:
    from dmarclens.cli.dashboard import dashboard

    return dashboard


def _demo() -> click.Command:
    from dmarclens.cli.demo import demo

    return demo


def _detect() -> click.Command:
    from dmarclens.cli.detect import detect

    return detect


def _ack() -> click.Command:
    from dmarclens.cli.detect import ack

    return ack


def _alert() -> click.Command:
    from dmarclens.cli.detect import alert

    return alert


def _enrich() -> click.Command:
    from dmarclens.cli.enrich import enrich

    return enrich


def _posture() -> click.Command:
    from dmarclens.cli.enrich import posture

    return posture


def _export() -> click.Command:
    from dmarclens.cli.export import export

    return export


def _generate() -> click.Command:
    from dmarclens.cli.generate import generate

    return generate


def _schema_docs() -> click.Command:
    from dmarclens.cli.schema_docs import schema_docs

    return schema_docs


COMMANDS: dict[str, Callable[[], click.Command]] = {
    "ingest": _ingest,
    "fetch": _fetch,
    "query": _query,
    "dashboard": _dashboard,
    "demo": _demo,
    "detect": _detect,
    "ack": _ack,
    "alert": _alert,
    "enrich": _enrich,
    "posture": _posture,
    "export": _export,
    "generate": _generate,
    "schema-docs": _schema_docs,
}
"""Command name → the function that imports and returns it (called on first use)."""


class LazyGroup(click.Group):
    """A click group whose commands are imported only when listed or run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in COMMANDS:
            cmd = COMMANDS[cmd_name]()
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dmarclens")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def cli(verbose: int, quiet: bool) -> None:
    """dmarclens: DMARC aggregate-report analyzer.

    Who sends as my domain, is it authorized, what changed, and is something
    abusing my own authorized pipeline?

    \b
    Exit codes: 0 ok; 3 finished but some inputs were rejected;
                1 could not run; 2 usage error.

    \b
    Example:
      dmarclens demo
      dmarclens ingest ~/dmarc-reports/ --db reports.duckdb
    """
    setup_logging(verbose, quiet)


def main() -> None:
    mark_own_process()
    try:
        cli(prog_name="dmarclens")
    finally:
        # Python's exit-time collections walk every object still alive
        # (modules, lookup tables, caches): a tenth of a second after a big
        # ingest, to free memory the process returns anyway. Frozen objects
        # are skipped; files and the database are closed by then.
        import gc

        gc.freeze()
