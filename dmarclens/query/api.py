"""The analyst's entry points: ``dmarclens.connect`` and ``dmarclens.load_dataframe``.

``import dmarclens`` re-exports these lazily (the CLI imports the package on
every cron run, so it must not pull in DuckDB or pandas).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmarclens.query.saved import pending_migrations, run_saved, snapshot_copy

if TYPE_CHECKING:
    import duckdb
    import pandas as pd


def _default_db(path: str | Path | None) -> Path:
    if path is not None:
        return Path(path).expanduser()
    from dmarclens.core.config import load_settings

    return load_settings().db  # $DMARCLENS_DB, dmarclens.toml, else ./dmarclens.duckdb


def connect(
    path: str | Path | None = None,
    *,
    read_only: bool = True,
    snapshot: bool | str | Path = False,
    lock_timeout: float = 30.0,
    warn_outdated: bool = True,
    **kwargs: Any,
) -> duckdb.DuckDBPyConnection:
    """Open a dmarclens database for analysis, with the stable views ready.

    Read-only by default so a stray ``CREATE`` or ``DELETE`` in a notebook
    cannot damage the data. While this connection is open, DuckDB keeps
    every other process from writing the file, so ``dmarclens ingest`` waits
    and eventually fails; for a long session pass ``snapshot=True`` (a
    private temporary copy, deleted when Python exits) or
    ``snapshot="path/copy.duckdb"`` (a copy you keep). A snapshot may be
    opened with ``read_only=False`` to add scratch tables of your own.

    ``path`` defaults to $DMARCLENS_DB / dmarclens.toml / ./dmarclens.duckdb.
    A read-only open of a file that lacks migrations warns, unless
    ``warn_outdated=False`` (the dashboard, whose pages read cleanly without
    the later stages' tables).
    """
    import warnings

    from dmarclens.store.db import connect as _connect

    db = _default_db(path)
    if snapshot:
        dest = None if snapshot is True else snapshot
        db = snapshot_copy(db, dest, lock_timeout=lock_timeout)
    con = _connect(db, read_only=read_only, lock_timeout=lock_timeout, **kwargs)
    if read_only and warn_outdated:
        behind = pending_migrations(con)
        if behind:
            warnings.warn(
                f"{db} lacks schema migrations {behind} (written by an older dmarclens), so some views "
                "are missing; a read-only open cannot add them. Open it with snapshot=True, or run any "
                "`dmarclens ingest` on it once.",
                stacklevel=2,
            )
    return con


def load_dataframe(
    name: str, db: str | Path | None = None, *, con: duckdb.DuckDBPyConnection | None = None, **params: Any
) -> pd.DataFrame:
    """Run the saved hunting query ``name`` and return a pandas DataFrame.

    ``params`` are the query's parameters (``dmarclens query --list`` or
    docs/hunting.md lists them), e.g. ``load_dataframe("new_passing_sources",
    db="reports.duckdb", days=7)``. With ``con`` it reuses an open connection
    (e.g. a snapshot); otherwise it opens ``db`` read-only just for this query
    and closes it, so it holds the file no longer than the query runs.
    """
    if con is not None:
        return run_saved(con, name, params).df()
    own = connect(db)
    try:
        return run_saved(own, name, params).df()
    finally:
        own.close()
