"""dmarclens: who sends as my domain, is it authorized, what changed, and is
something abusing my own (authorized) pipeline?

Analysts: ``dmarclens.connect(path)`` opens the database read-only with the
stable views ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import duckdb


def connect(path: str = "dmarclens.duckdb", *, read_only: bool = True, **kwargs: Any) -> duckdb.DuckDBPyConnection:
    """Open a dmarclens database (read-only by default) for analysis."""
    from dmarclens.store.db import connect as _connect

    return _connect(path, read_only=read_only, **kwargs)
