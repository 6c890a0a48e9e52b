"""The analyst's library: saved hunting queries, their parameters, exports,
and a way to read the database without ever blocking ingest.

Saved queries are plain ``.sql`` files in ``dmarclens/query/sql/`` so an analyst
can read, copy and run them in any DuckDB tool. Each starts with a header::

    -- purpose: one line saying what the query finds
    -- param: days int = 14 | what the parameter means
    -- param: ip text | a parameter without default is required
    -- any other comment lines explain why the query matters

and refers to its parameters as DuckDB named parameters (``$days``). Values
are always bound by DuckDB, never pasted into the SQL text, so a parameter
cannot change what a query does. The CLI (``dmarclens query --saved``),
``dmarclens.load_dataframe`` and docs/hunting.md all read the same files.
"""

from __future__ import annotations

import atexit
import difflib
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmarclens.core.errors import DmarcLensError, StoreError

if TYPE_CHECKING:
    import duckdb

PARAM_TYPES = ("int", "float", "text", "date", "bool")
EXPORT_FORMATS = ("table", "csv", "json", "parquet")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PURPOSE_RE = re.compile(r"^--\s*purpose:\s*(?P<text>.+?)\s*$")
_PARAM_RE = re.compile(
    r"^--\s*param:\s*(?P<name>[a-z_][a-z0-9_]*)\s+(?P<type>[a-z]+)"
    r"(?:\s*=\s*(?P<default>[^|]*?))?\s*\|\s*(?P<help>.+?)\s*$"
)
_PLACEHOLDER_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
# Names that load_dataframe() takes for itself; a query parameter may not use them.
RESERVED_PARAM_NAMES = frozenset({"name", "db", "con", "snapshot"})


class QueryUsageError(DmarcLensError):
    """The caller asked for something that cannot run as given (exit 2)."""

    exit_code = 2


class UnknownQueryError(QueryUsageError):
    """No saved query has that name."""


class QueryParamError(QueryUsageError):
    """A parameter is unknown, missing or not of its declared type."""


class QueryDefinitionError(DmarcLensError):
    """A packaged .sql file has a malformed header: a bug in dmarclens, not in the call."""


@dataclass(frozen=True)
class Param:
    """One declared parameter of a saved query."""

    name: str
    type: str
    default: str | None  # as written in the header; None = required
    help: str

    @property
    def required(self) -> bool:
        return self.default is None

    def default_value(self) -> Any:
        """The default, converted; ``NULL`` means "let the SQL decide" (e.g. newest day)."""
        if self.default is None or self.default.upper() == "NULL":
            return None
        return self.convert(self.default)

    def convert(self, value: Any) -> Any:
        """Turn a CLI string or a Python value into what DuckDB should bind.

        Checked here rather than left to DuckDB so the error names the
        parameter and the expected form instead of a cast error deep in SQL.
        """
        if value is None:
            return None
        try:
            if self.type == "int":
                if isinstance(value, bool) or not isinstance(value, int | str):
                    raise ValueError
                return int(value.strip()) if isinstance(value, str) else value
            if self.type == "float":
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    raise ValueError
                return float(value.strip()) if isinstance(value, str) else float(value)
            if self.type == "text":
                if not isinstance(value, str):
                    raise ValueError
                return value
            if self.type == "date":
                if isinstance(value, datetime):
                    return value.date()
                if isinstance(value, date):
                    return value
                if not isinstance(value, str):
                    raise ValueError
                text = value.strip().lower()
                if text == "today":
                    return datetime.now(UTC).date()
                return date.fromisoformat(text)
            if self.type == "bool":
                if isinstance(value, bool):
                    return value
                text = str(value).strip().lower()
                if text in {"true", "yes", "1", "on"}:
                    return True
                if text in {"false", "no", "0", "off"}:
                    return False
                raise ValueError
        except ValueError:
            pass
        raise QueryParamError(f"parameter {self.name}: expected {self.expected()}, got {value!r}")

    def expected(self) -> str:
        return {
            "int": "a whole number",
            "float": "a number",
            "text": "text",
            "date": "a date YYYY-MM-DD or 'today'",
            "bool": "true or false",
        }[self.type]

    def describe(self) -> str:
        """``days=14`` / ``ip (required)``: how --list and the docs show it."""
        if self.required:
            return f"{self.name} (required)"
        return f"{self.name}={self.default}"


@dataclass(frozen=True)
class SavedQuery:
    """A packaged hunting query: its header and SQL."""

    name: str
    purpose: str
    params: tuple[Param, ...]
    notes: str
    sql: str

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def bind(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every declared parameter with a value: given ones converted, the rest defaulted.

        DuckDB wants exactly the named parameters the SQL uses, so unknown
        names are refused here with the list of valid ones.
        """
        given = dict(given or {})
        unknown = sorted(set(given) - {p.name for p in self.params})
        if unknown:
            valid = ", ".join(p.name for p in self.params) or "none"
            raise QueryParamError(
                f"parameter {unknown[0]}: {self.name} has no such parameter (parameters: {valid})"
            )
        values: dict[str, Any] = {}
        for p in self.params:
            if p.name in given and given[p.name] is not None:
                values[p.name] = p.convert(given[p.name])
            elif p.required:
                raise QueryParamError(
                    f"parameter {p.name}: {self.name} needs it ({p.help}); "
                    f"pass --param {p.name}=VALUE"
                )
            else:
                values[p.name] = p.default_value()
        return values


def _queries_dir() -> Any:
    return resources.files("dmarclens.query").joinpath("sql")


def parse_query(name: str, text: str) -> SavedQuery:
    """Read the header of one saved query; raise on anything malformed."""
    if not _NAME_RE.match(name):
        raise QueryDefinitionError(f"saved query {name!r}: file names must be lower_snake_case")
    purpose = None
    params: list[Param] = []
    notes: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        if m := _PURPOSE_RE.match(stripped):
            purpose = m.group("text")
        elif stripped.startswith("-- param:"):
            m = _PARAM_RE.match(stripped)
            if not m or m.group("type") not in PARAM_TYPES:
                raise QueryDefinitionError(f"saved query {name}: bad param line {stripped!r}")
            default = m.group("default")
            params.append(Param(m.group("name"), m.group("type"), default if default else None, m.group("help")))
        else:
            notes.append(stripped[2:].strip())
    if not purpose:
        raise QueryDefinitionError(f"saved query {name}: no '-- purpose:' line")
    names = [p.name for p in params]
    if len(set(names)) != len(names) or RESERVED_PARAM_NAMES & set(names):
        raise QueryDefinitionError(f"saved query {name}: duplicate or reserved parameter names {names}")
    used = placeholders(text)
    if used != set(names):
        raise QueryDefinitionError(
            f"saved query {name}: declared parameters {sorted(names)} but the SQL uses {sorted(used)}"
        )
    return SavedQuery(name, purpose, tuple(params), " ".join(notes), text)


def placeholders(sql: str) -> set[str]:
    """Named parameters ($name) the SQL uses, ignoring comments and string literals."""
    # One left-to-right pass, so an apostrophe in a comment or "--" in a string is handled.
    body = re.sub(r"'(?:[^']|'')*'|--[^\n]*", " ", sql)
    return set(_PLACEHOLDER_RE.findall(body))


@lru_cache(maxsize=1)
def _load_all() -> dict[str, SavedQuery]:
    out: dict[str, SavedQuery] = {}
    for entry in _queries_dir().iterdir():
        if entry.name.endswith(".sql"):
            name = entry.name[: -len(".sql")]
            out[name] = parse_query(name, entry.read_text(encoding="utf-8"))
    return dict(sorted(out.items()))


def list_queries() -> list[SavedQuery]:
    """Every saved query, by name."""
    return list(_load_all().values())


def get_query(name: str) -> SavedQuery:
    """The saved query called ``name``; the error suggests close names."""
    queries = _load_all()
    if name in queries:
        return queries[name]
    close = difflib.get_close_matches(name, list(queries), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `dmarclens query --list` shows them all"
    raise UnknownQueryError(f"no saved query named {name!r}{hint}")


def parse_param_args(pairs: Iterable[str]) -> dict[str, str]:
    """``["days=7", "domain=example.com"]`` → dict; each must be NAME=VALUE, once."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise QueryParamError(f"parameter {pair!r}: write it as NAME=VALUE, e.g. --param days=7")
        if name in out:
            raise QueryParamError(f"parameter {name}: given twice")
        out[name] = value
    return out


def run_saved(
    con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """Execute a saved query with bound parameters; returns the cursor to fetch from."""
    query = get_query(name)
    return execute(con, query.sql, query.bind(params))


def execute(
    con: duckdb.DuckDBPyConnection, sql: str, values: Mapping[str, Any] | Sequence[Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """Run SQL, turning DuckDB errors into one-line DmarcLensErrors.

    A missing view most likely means a database written by an older
    dmarclens; say so instead of DuckDB's catalog error.
    """
    import duckdb

    try:
        return con.execute(sql, values if values is not None else [])
    except duckdb.CatalogException as e:
        behind = pending_migrations(con)
        if behind:
            raise StoreError(
                f"query failed: {' '.join(str(e).split())} — the database is missing schema migrations "
                f"{behind}; open it writable once (any `dmarclens ingest`) or use dmarclens.connect(path, "
                "snapshot=True)"
            ) from e
        raise StoreError(f"query failed: {' '.join(str(e).split())}") from e
    except duckdb.Error as e:
        raise StoreError(f"query failed: {' '.join(str(e).split())}") from e


def pending_migrations(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Packaged migrations this database has not applied (read-only opens cannot apply them)."""
    import duckdb

    from dmarclens.store.db import migration_files

    try:
        done = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
    except duckdb.Error:
        done = set()
    return [v for v, _, _ in migration_files() if v not in done]


# --- output -----------------------------------------------------------------


def write_result(cursor: duckdb.DuckDBPyConnection, fmt: str, output: str | Path | None = None) -> str | None:
    """Render a result in ``fmt``; write it to ``output`` or return the text.

    Parquet goes through Arrow straight from DuckDB (types kept: dates,
    lists, structs) and needs a file; the text formats reuse dmarclens.query.output
    so the CLI and exports agree on how values look.
    """
    if fmt not in EXPORT_FORMATS:
        raise QueryUsageError(f"format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "parquet":
        if output is None:
            raise QueryUsageError("--format parquet writes a binary file: give --output FILE")
        import pyarrow.parquet as pq

        # DuckDB 2 names it to_arrow_table; 1.x (still supported) fetch_arrow_table.
        fetch = getattr(cursor, "to_arrow_table", None) or cursor.fetch_arrow_table  # type: ignore[attr-defined]
        table = fetch()
        _write_guarded(output, lambda path: pq.write_table(table, str(path)))
        return None
    from dmarclens.query.output import render

    columns = [d[0] for d in cursor.description or []]
    rows = cursor.fetchall() if columns else []
    text = render(fmt, columns, rows)
    if output is None:
        return text
    write_text(output, text)
    return None


def write_text(output: str | Path, text: str) -> None:
    """Write text output to a file, with a one-line error instead of a traceback."""
    _write_guarded(output, lambda path: Path(path).write_text(text + "\n", encoding="utf-8"))


def _write_guarded(output: str | Path, write: Any) -> None:
    path = Path(output)
    if not path.parent.is_dir():
        raise QueryUsageError(f"--output {path}: folder {path.parent} does not exist")
    try:
        write(path)
    except OSError as e:
        raise DmarcLensError(f"--output {path}: {e.strerror or e}") from e


def catalog(fmt: str = "table") -> str:
    """What ``dmarclens query --list`` prints: name, purpose, parameters."""
    from dmarclens.query.output import render

    if fmt == "parquet":
        raise QueryUsageError("--list prints text: use --format table, csv or json")
    queries = list_queries()
    if fmt == "table":
        # Purposes are sentences; a column table would cut them off.
        width = max(len(q.name) for q in queries)
        out = []
        for q in queries:
            out.append(f"{q.name.ljust(width)}  {q.purpose}")
            out.append(f"{'':{width}}  params: {', '.join(p.describe() for p in q.params) or 'none'}")
        return "\n".join(out)
    columns = ["name", "purpose", "params"]
    rows = [(q.name, q.purpose, ", ".join(p.describe() for p in q.params)) for q in queries]
    return render(fmt, columns, rows)


def catalog_markdown() -> str:
    """docs/hunting.md, generated from the .sql files so the two cannot drift."""
    lines = [
        "# Hunting queries",
        "",
        "Generated from `dmarclens/query/sql/*.sql` by `python -m dmarclens.query.saved docs/hunting.md`; "
        "a test fails when this file and the queries disagree. Do not edit by hand.",
        "",
        "Saved queries look for abuse that **passes** DMARC (a compromised tenant in an authorized "
        "provider, a partner ESP account, a leaked API key) and for gaps in what the reports show you. "
        "Run one with `dmarclens query --saved NAME [--param NAME=VALUE]...`, list them with "
        "`dmarclens query --list`, or load one into pandas with "
        "`dmarclens.load_dataframe(NAME, db=PATH, **params)`. Export with "
        "`--format csv|json|parquet --output FILE`.",
        "",
        "Parameters are bound by DuckDB (`$name` in the SQL), never pasted into the text. Dates are "
        "`YYYY-MM-DD` or `today`. `as_of = NULL` means *the newest day in the data*, so a query "
        "on an archive answers for the archive's last day; pass `--param as_of=YYYY-MM-DD` to replay "
        "a past day. The queries read only the stable views (`v_records`, `v_reports`), so they work "
        "unchanged in the DuckDB CLI: replace `$name` with a value.",
        "",
        "| query | finds |",
        "|---|---|",
    ]
    queries = list_queries()
    lines += [f"| [`{q.name}`](#{q.name}) | {q.purpose} |" for q in queries]
    for q in queries:
        lines += ["", f"## {q.name}", "", q.purpose, "", f"SQL: [`dmarclens/query/sql/{q.name}.sql`]"
                  f"(../dmarclens/query/sql/{q.name}.sql)", ""]
        if q.notes:
            lines += [q.notes, ""]
        lines += ["| parameter | type | default | meaning |", "|---|---|---|---|"]
        for p in q.params:
            default = "*(required)*" if p.required else f"`{p.default}`"
            lines.append(f"| `{p.name}` | {p.type} | {default} | {p.help} |")
        example = " ".join(f"--param {p.name}=..." for p in q.params if p.required)
        lines += ["", "```sh", f"dmarclens query --saved {q.name} {example}".rstrip(), "```"]
    return "\n".join(lines) + "\n"


# --- snapshots ----------------------------------------------------------------

_SNAPSHOT_DIRS: list[Path] = []


def _remove_snapshot_dirs() -> None:
    for folder in _SNAPSHOT_DIRS:
        shutil.rmtree(folder, ignore_errors=True)


def snapshot_copy(path: str | Path, dest: str | Path | None = None, *, lock_timeout: float = 30.0) -> Path:
    """Copy the database to ``dest`` (default: a temp file removed at exit) and return it.

    DuckDB lets no other process open a file that a writer holds, and an
    open reader keeps the writer out. A notebook that holds the real file
    for hours would stop every scheduled ingest; a copy does not. The copy is
    taken while holding a read-only connection, which waits for a running
    ingest to finish and keeps the next one out for the seconds the copy
    takes, so the copy is never half-written. The copy is then brought up to
    the current schema, so the views are there even for an older file.
    """
    from dmarclens.store.db import connect as db_connect

    src = Path(path).expanduser()
    if dest is None:
        folder = Path(tempfile.mkdtemp(prefix="dmarclens-snapshot-"))
        if not _SNAPSHOT_DIRS:
            atexit.register(_remove_snapshot_dirs)
        _SNAPSHOT_DIRS.append(folder)
        target = folder / src.name
    else:
        target = Path(dest).expanduser()
        if target.resolve() == src.resolve():
            raise QueryUsageError(f"snapshot {target}: must be a different file from the database")
    holder = db_connect(src, read_only=True, lock_timeout=lock_timeout)
    try:
        shutil.copyfile(src, target)
        wal = src.with_name(src.name + ".wal")
        target_wal = target.with_name(target.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, target_wal)
        elif target_wal.exists():
            target_wal.unlink()
    except OSError as e:
        raise StoreError(f"snapshot of {src} to {target}: {e.strerror or e}") from e
    finally:
        holder.close()
    db_connect(target).close()  # writable open of the copy applies pending migrations
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dmarclens.query.saved [FILE]``: write docs/hunting.md (or print it)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    text = catalog_markdown()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
