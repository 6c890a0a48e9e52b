"""dmarclens: who sends as my domain, is it authorized, what changed, and is
something abusing my own (authorized) pipeline?

Analysts::

    import dmarclens
    con = dmarclens.connect("reports.duckdb")                  # read-only, views ready
    con = dmarclens.connect("reports.duckdb", snapshot=True)   # a private copy: never blocks ingest
    df = dmarclens.load_dataframe("new_passing_sources", db="reports.duckdb", days=7)

Both live in ``dmarclens.query.api`` and are loaded on first use:
``import dmarclens`` must not pull in DuckDB or pandas, because the CLI
imports this package on every cron run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dmarclens.core.version import __version__

if TYPE_CHECKING:
    from dmarclens.query.api import connect, load_dataframe

__all__ = ["__version__", "connect", "load_dataframe"]


def __getattr__(name: str) -> Any:
    """``dmarclens.connect`` and ``dmarclens.load_dataframe``, imported when first used."""
    if name == "connect":
        from dmarclens.query.api import connect

        return connect
    if name == "load_dataframe":
        from dmarclens.query.api import load_dataframe

        return load_dataframe
    raise AttributeError(f"module 'dmarclens' has no attribute {name!r}")
