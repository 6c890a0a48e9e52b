"""What every command shares: exit codes, logging to stderr, one-line errors,
the --db/--config options and the terminal progress line.

Exit codes (every command): 0 = success (every input stored or a duplicate);
3 = finished, but some inputs were rejected (reasons printed and recorded in
ingest_items); 1 = could not run (bad DB path, DB locked after retries, server
unreachable ...); 2 = usage error.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from dmarclens.core.errors import DmarcLensError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3

_own_process = False


def mark_own_process() -> None:
    """Called by ``dmarclens.cli.main``: this process is the ``dmarclens`` command itself."""
    global _own_process
    _own_process = True


def own_process() -> bool:
    """True when the process is the ``dmarclens`` command itself, not a program (or
    test) that invokes the click group: only then may a command decide for the
    whole process (pyarrow without NumPy, ``core.arrow.declare_numpy_free``)."""
    return _own_process


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"dmarclens: {record.getMessage()}"


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrFormatter())
    root = logging.getLogger("dmarclens")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # parsedmarc logs every recoverable oddity as a warning; keep it for -vv.
    logging.getLogger("parsedmarc").setLevel(logging.DEBUG if verbose > 1 else logging.ERROR)


def fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"dmarclens: error: {message}", err=True)
    sys.exit(code)


class Progress:
    """A one-line counter on a terminal; silent when stderr is not a TTY."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.counts: dict[str, int] = {}

    def __call__(self, item: Any) -> None:
        self.counts[item.outcome] = self.counts.get(item.outcome, 0) + 1
        if self.enabled:
            text = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
            sys.stderr.write(f"\r\x1b[2Kingesting: {sum(self.counts.values())} items ({text})")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.counts:
            sys.stderr.write("\n")


def warn(message: str) -> None:
    """One warning line on stderr (a step after the commit did not happen; the run's result stands)."""
    click.echo(f"dmarclens: warning: {message}", err=True)


def configure_security(settings: Any) -> None:
    """Owned domains and report-mail trust come from the same Settings the command loaded
    (so --config applies to them too), before any parsing starts or workers fork."""
    from dmarclens.sources.mailauth import configure

    run_guarded(configure, settings)


def resolve_db(db: str | None, config: str | None = None) -> Path:
    from dmarclens.core.config import load_settings

    return load_settings(config=config, db=db).db


def run_guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a library function, turning expected errors into one line + exit code."""
    try:
        return fn(*args, **kwargs)
    except DmarcLensError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


db_option = click.option(
    "--db", "db", type=click.Path(dir_okay=False), default=None,
    help="DuckDB file (default: $DMARCLENS_DB or ./dmarclens.duckdb).",
)


config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None,
    help="TOML config file (default: $DMARCLENS_CONFIG or ./dmarclens.toml).",
)
