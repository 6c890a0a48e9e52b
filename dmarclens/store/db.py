"""Opening the DuckDB file: locking, retries and schema migrations.

DuckDB lets one process write a file and blocks every other process (readers
included) while it does. Every caller therefore opens late, does one short
unit of work and closes; a lock conflict is retried with backoff so a
dashboard render and a cron ingest that collide both succeed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from dmarclens.core.errors import LockedError, StoreError

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def _is_lock_error(err: Exception) -> bool:
    text = str(err)
    return "Could not set lock" in text or "Conflicting lock" in text


def connect(
    path: str | Path,
    *,
    read_only: bool = False,
    lock_timeout: float = 30.0,
    migrate: bool = True,
) -> duckdb.DuckDBPyConnection:
    """Open the database, retrying while another process holds the lock.

    A writable open also brings the schema up to date. A read-only open of a
    file that does not exist is an error (there is nothing to read), and the
    message says how to create it.
    """
    import duckdb

    path = Path(path)
    if read_only and not path.exists():
        raise StoreError(f"database {path}: not found (run `dmarclens ingest PATH --db {path}` first)")
    if not read_only and path.parent and not path.parent.exists():
        raise StoreError(f"database {path}: folder {path.parent} does not exist")
    deadline = time.monotonic() + lock_timeout
    delay = 0.05
    attempt = 0
    while True:
        attempt += 1
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as e:
            if not _is_lock_error(e):
                raise StoreError(f"database {path}: {e}") from e
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"database {path} is locked by another dmarclens process "
                    f"(still locked after {lock_timeout:.0f}s, {attempt} attempts); "
                    "try again when it finishes"
                ) from e
            if attempt == 1:
                log.info("database %s is locked by another process; waiting", path)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)
        except duckdb.Error as e:
            raise StoreError(f"database {path}: {e}") from e
    if migrate and not read_only:
        try:
            apply_migrations(con)
        except Exception:
            con.close()
            raise
    return con


@contextmanager
def open_db(
    path: str | Path, *, read_only: bool = False, lock_timeout: float = 30.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open, yield, and always close: nobody holds the file between units of work."""
    con = connect(path, read_only=read_only, lock_timeout=lock_timeout)
    try:
        yield con
    finally:
        con.close()


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every packaged migration, in order."""
    return list(_migration_files())


@lru_cache(maxsize=1)
def _migration_files() -> tuple[tuple[int, str, str], ...]:
    # Package files do not change while a process runs; an ingest opens the
    # database once per batch and should not re-read seven SQL files each time.
    out = []
    for entry in resources.files("dmarclens.store.schema").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two schema migrations share a number: {versions}")
    return tuple(out)


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply pending migrations, each in its own transaction; return versions applied.

    An up-to-date file costs one read-only query: the catalog statements
    below are writes, and a write on every open would make every close
    checkpoint the file.
    """
    import duckdb

    wanted = [v for v, _, _ in _migration_files()]
    try:
        have = con.execute("SELECT list(version ORDER BY version) FROM schema_migrations").fetchone()
    except duckdb.CatalogException:
        have = None
    if have is not None and have[0] == wanted:
        return []
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    for target, text in (
        ("TABLE schema_migrations", "Schema migrations applied to this file, in order."),
        ("COLUMN schema_migrations.version", "Migration number (the NNNN of store/schema/NNNN_name.sql)."),
        ("COLUMN schema_migrations.name", "Migration name."),
        ("COLUMN schema_migrations.applied_at", "When it was applied (UTC)."),
    ):
        con.execute(f"COMMENT ON {target} IS '{text}'")
    done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, sql in migration_files():
        if version in done:
            continue
        try:
            with transaction(con):
                con.execute(sql)
                con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, name])
        except duckdb.Error as e:
            raise StoreError(f"schema migration {version:04d}_{name} failed: {e}") from e
        applied.append(version)
    if applied:
        inherit_view_comments(con)
    return applied


# Where a view column passes a table column through under the same name, it
# inherits that column's comment, so each meaning is written down once.
_COMMENT_SOURCES = ("records", "reports", "ip_info", "ingest_items", "ingest_runs")


def inherit_view_comments(con: duckdb.DuckDBPyConnection) -> int:
    rows = con.execute(
        """SELECT table_name, column_name, comment FROM duckdb_columns()
           WHERE schema_name = 'main' AND NOT internal"""
    ).fetchall()
    views = {r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal"
    ).fetchall()}
    table_comments: dict[str, str] = {}
    order = {name: i for i, name in enumerate(_COMMENT_SOURCES)}
    for table, column, comment in sorted(rows, key=lambda r: order.get(r[0], len(order))):
        if table not in views and comment and column not in table_comments:
            table_comments[column] = comment
    done = 0
    for table, column, comment in rows:
        if table in views and not comment and column in table_comments:
            text = table_comments[column].replace("'", "''")
            con.execute(f'COMMENT ON COLUMN "{table}"."{column}" IS \'{text}\'')
            done += 1
    return done


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


WORK_MEMORY_LIMITS = ("64MB", "1GB")
"""DuckDB's memory limits, tried in turn, for an ingest's writes and the
classification after them (DuckDB's own default is 80 % of RAM).

Why: with the default, DuckDB keeps whatever it has touched cached. A
200,000-record report peaked at ~250 MB in the writer, from the blocks of
the rows just written and from the classification that follows; bounded,
the writer stays near 200 MB however many records the report holds. Work
that needs more (large indexes; a first full classification of 10 million
rows, which takes 6 GB under the default and 1.1 GB bounded) runs again
under the next limit, and last under DuckDB's default, instead of failing:
see ``bounded``.
"""

T = TypeVar("T")


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``BEGIN`` … ``COMMIT`` around the block, or ``ROLLBACK`` when it raises.

    Every multi-statement write goes through here, so each one is all or
    nothing. The commit runs under DuckDB's own memory limit (``commit``).
    A rollback that fails too (DuckDB has already ended the transaction after
    a failed COMMIT, or the database was invalidated) never hides the error
    that caused it: that one is what the caller sees.
    """
    import duckdb

    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        commit(con)
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


def commit(con: duckdb.DuckDBPyConnection) -> None:
    """COMMIT under DuckDB's own memory limit, whatever ``bounded`` set.

    Why: a commit that checkpoints and runs out of memory does not fail like
    a statement (DuckDB 2.0 invalidates the database instance, and no retry
    on that connection can follow), so the bound covers the statements of a
    transaction, never its commit; the writes' peak is in the statements.
    """
    con.execute("RESET memory_limit")
    con.execute("COMMIT")


def bounded(con: duckdb.DuckDBPyConnection, attempt: Callable[[], T], *,
            limits: Sequence[str] | None = None, what: str = "the work") -> T:
    """``attempt()`` with DuckDB's memory bounded to ``limits[0]`` (default
    ``WORK_MEMORY_LIMITS``); each time
    DuckDB runs out of memory, ``attempt()`` again under the next limit, and
    last under DuckDB's default.

    ``attempt`` must roll itself back on error (one transaction), so running
    it again is safe. The out-of-memory error may come wrapped (a
    ``StoreError``) or hidden behind the error it caused next (an aborted
    transaction); it counts wherever it is in the chain. The limit is lifted
    afterwards.
    """
    import duckdb

    try:
        for limit in WORK_MEMORY_LIMITS if limits is None else limits:
            try:
                # Setting it fails too when DuckDB already holds more than that.
                con.execute(f"SET memory_limit = '{limit}'")
                return attempt()
            except Exception as e:
                if not _out_of_memory(e, duckdb.OutOfMemoryException):
                    raise
                log.info("%s needed more than %s of memory; running it again with more", what, limit)
        con.execute("RESET memory_limit")
        return attempt()
    finally:
        with contextlib.suppress(duckdb.Error):
            con.execute("RESET memory_limit")


def _out_of_memory(err: BaseException | None, oom: type[BaseException]) -> bool:
    seen = 0
    while err is not None and seen < 20:
        if isinstance(err, oom):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False
