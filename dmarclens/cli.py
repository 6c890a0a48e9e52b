"""The `dmarclens` command line: parse arguments, call one library function,
format the result. No business logic lives here.

Exit codes (every command): 0 = success (every input stored or a duplicate);
3 = finished, but some inputs were rejected (reasons printed and recorded in
ingest_items); 1 = could not run (bad DB path, DB locked after retries, server
unreachable ...); 2 = usage error.

Commands are loaded lazily so `dmarclens ingest` from cron does not pay for
importing the dashboard or detector stacks.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dmarclens import __version__
from dmarclens.errors import DmarcLensError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3

# name -> "module:attribute" of a click command, imported on first use.
LAZY_COMMANDS: dict[str, str] = {
    "fetch": "dmarclens.commands.fetch:fetch",
    "enrich": "dmarclens.commands.enrich:enrich",
    "posture": "dmarclens.commands.enrich:posture",
    "detect": "dmarclens.commands.detect:detect",
    "ack": "dmarclens.commands.detect:ack",
    "alert": "dmarclens.commands.detect:alert",
    "export": "dmarclens.commands.export:export",
    "generate": "dmarclens.commands.generate:generate",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(n for n in LAZY_COMMANDS if self._load(n) is not None)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        return cmd if cmd is not None else self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(name)
        if not target:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                return None  # command not built yet in this version
            raise
        return getattr(module, attr, None)


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


def configure_security(settings: Any) -> None:
    """Owned domains and report-mail trust come from the same Settings the command loaded
    (so --config applies to them too), before any parsing starts or workers fork."""
    from dmarclens.security import configure

    run_guarded(configure, settings)


def resolve_db(db: str | None, config: str | None = None) -> Path:
    from dmarclens.config import load_settings

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


@cli.command()
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
    from dmarclens.config import load_settings
    from dmarclens.pipeline import ingest_paths

    settings = run_guarded(load_settings, config=config, db=db)
    configure_security(settings)
    if _OWN_PROCESS and not with_enrich:  # parse, store, classify, exit: nothing converts to NumPy
        from dmarclens.fastparse import declare_numpy_free

        declare_numpy_free()
    progress = Progress(enabled=not as_json)
    summary = run_guarded(
        ingest_paths, paths, settings.db, lock_timeout=settings.lock_timeout, progress=progress,
        workers=workers, after_commit=None if with_enrich else classify_hook(settings),
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
        from dmarclens.commands.enrich import enrich_after_ingest

        enrich_after_ingest(settings)
    sys.exit(summary.exit_code)


def classify_hook(settings: Any) -> Callable[[Any], None]:
    """``classify_after_ingest`` as an ``after_commit`` hook: it runs on the
    connection the ingest committed with, instead of opening the file again."""
    def hook(con: Any) -> None:
        # Imported here: the ingest forks its big-report child before this runs.
        from dmarclens.enrich import classify
        from dmarclens.store.db import bounded

        try:
            rules = classify.rules_from_settings(settings.raw)
            # Bounded like the ingest's writes; a first full pass over a big
            # database gets more (store.db.bounded).
            bounded(con, lambda: classify.update_on(con, settings.db, rules, settings.domains, incremental=True),
                    what="classifying traffic")
        except DmarcLensError as e:
            click.echo(f"dmarclens: warning: traffic classes not updated: {e}", err=True)

    return hook


def classify_after_ingest(path: Path, settings: Any) -> None:
    """Traffic classes and lookalikes for what was just stored: SQL only, no DNS.

    Incremental (only the rows the new records can change; docs/identity.md),
    one connection, one transaction. Runs after the ingest committed, so a
    failure here never loses a report; it is one warning line and the exit
    code stays the ingest's, and the next run classifies the rows left over.
    """
    try:
        from dmarclens.enrich.rdns import enrich_db
    except ImportError:
        return
    try:
        enrich_db(path, resolve=False, settings_raw=settings.raw, owned_domains=settings.domains,
                  lock_timeout=settings.lock_timeout)
    except DmarcLensError as e:
        click.echo(f"dmarclens: warning: traffic classes not updated: {e}", err=True)


@cli.command()
@click.argument("sql", required=False)
@db_option
@click.option("--saved", "saved", metavar="NAME", default=None,
              help="Run a saved hunting query instead of SQL (see --list, docs/hunting.md).")
@click.option("--param", "params", metavar="NAME=VALUE", multiple=True,
              help="A parameter of the saved query; repeat for several.")
@click.option("--list", "list_saved", is_flag=True, help="List the saved queries, their purpose and parameters.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="Output format; parquet needs --output.")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False), default=None,
              help="Write the result to FILE instead of stdout.")
def query(sql: str | None, db: str | None, saved: str | None, params: tuple[str, ...], list_saved: bool,
          fmt: str, output: str | None) -> None:
    """Run SQL or a saved hunting query against the database (opened read-only).

    The stable views are v_records (one row per record with report and source
    details), v_daily (per domain and day), v_sources (per domain and source
    IP) and v_reports (per report); see docs/schema.md. Saved queries hunt for
    abuse that passes DMARC; parameters are bound by DuckDB, never pasted into
    the SQL. Usage errors (unknown query or parameter, bad value) exit 2.

    \b
    Example:
      dmarclens query "SELECT domain, sum(count) FROM v_records GROUP BY 1" --format csv
      dmarclens query --list
      dmarclens query --saved new_passing_sources --param days=7
      dmarclens query --saved reject_impact --format parquet --output impact.parquet
    """
    from dmarclens import hunting
    from dmarclens.store.db import connect

    if list_saved:
        if sql or saved or params:
            raise click.UsageError("--list takes no SQL, --saved or --param")
        text = run_guarded(hunting.catalog, fmt)
        if output:
            run_guarded(hunting.write_text, output, text)
        else:
            click.echo(text)
        return
    if sql and saved:
        raise click.UsageError("give either SQL or --saved NAME, not both")
    if not sql and not saved:
        raise click.UsageError(
            "give a SQL statement, e.g. dmarclens query \"SELECT * FROM v_daily LIMIT 5\", "
            "or --saved NAME (dmarclens query --list shows them)"
        )
    if params and not saved:
        raise click.UsageError("--param only goes with --saved NAME")
    if fmt == "parquet" and not output:
        raise click.UsageError("--format parquet writes a binary file: give --output FILE")
    if saved:
        # Validate name and parameters before touching the database.
        saved_query = run_guarded(hunting.get_query, saved)
        given = run_guarded(hunting.parse_param_args, params)
        values = run_guarded(saved_query.bind, given)
        statement, bound = saved_query.sql, values
    else:
        statement, bound = sql, None
    path = resolve_db(db)
    con = run_guarded(connect, path, read_only=True)
    try:
        cursor = run_guarded(hunting.execute, con, statement, bound)
        text = run_guarded(hunting.write_result, cursor, fmt, output)
    finally:
        con.close()
    if text is not None:
        click.echo(text)


def _dashboard_app() -> Path:
    from importlib import resources

    return Path(str(resources.files("dashboards").joinpath("app.py")))


def _is_loopback(host: str) -> bool:
    return host in {"127.0.0.1", "localhost", "::1"} or host.startswith("127.")


def launch_dashboard(
    db: Path, host: str, port: int, *, open_browser: bool = False, config: str | None = None
) -> int:
    """Run Streamlit in the foreground; returns its exit code.

    The app gets the database and the password hash through its environment,
    so it does not depend on the directory it is started from; every Streamlit
    option (telemetry off, offline map, theme) comes from dashboards.launch.
    """
    import subprocess

    from dashboards.auth import ENV_HASH, configured_hash
    from dashboards.launch import streamlit_command
    from dmarclens.config import load_settings

    app = _dashboard_app()
    if not app.is_file():
        fail(f"dashboard app not found at {app}; is the package installed completely?")
    settings = run_guarded(load_settings, config=config)
    password_hash = configured_hash(settings.raw)
    if password_hash and not password_hash.startswith("scrypt$"):
        fail("the dashboard password hash is not one dmarclens made; create one with "
             "`dmarclens dashboard --hash-password`", EXIT_USAGE)
    if not _is_loopback(host) and not password_hash:
        click.echo(
            f"dmarclens: warning: the dashboard will listen on {host}, reachable from other machines, "
            "with no password set. Anyone who can reach it sees every sender of your domains. Set one: "
            "`dmarclens dashboard --hash-password`, then [dashboard] password_hash in the config "
            f"or {ENV_HASH}.",
            err=True,
        )
    env = dict(os.environ)
    env["DMARCLENS_DB"] = str(db.resolve())
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    if password_hash:
        env[ENV_HASH] = password_hash
    if config:
        env["DMARCLENS_CONFIG"] = str(Path(config).resolve())
    cmd = streamlit_command(host, port, headless=not open_browser)
    shown = f"[{host}]" if ":" in host else host
    gate = "password required" if password_hash else "no password"
    click.echo(f"dmarclens: dashboard on http://{shown}:{port}  (database {db}; {gate}; Ctrl+C to stop)", err=True)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


@cli.command()
@db_option
@config_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Loopback by default; anything else warns unless a password is set.")
@click.option("--port", default=8501, show_default=True, type=int)
@click.option("--open/--no-open", "open_browser", default=False, help="Open a browser tab.")
@click.option("--hash-password", "hash_password", is_flag=True,
              help="Ask for a dashboard password, print its hash for the config, and exit.")
def dashboard(db: str | None, config: str | None, host: str, port: int, open_browser: bool,
              hash_password: bool) -> None:
    """Open the Streamlit dashboard on the database.

    Binds 127.0.0.1 unless --host says otherwise; binding to another address
    without a configured password prints a warning. The optional password is
    stored only as a salted scrypt hash: [dashboard] password_hash in the
    config, or DMARCLENS_DASHBOARD_PASSWORD_HASH. Usage telemetry is off and
    the pages load nothing from the internet.

    \b
    Example:
      dmarclens dashboard --db reports.duckdb
      dmarclens dashboard --hash-password        # then put the line in dmarclens.toml
      dmarclens dashboard --host 0.0.0.0 --port 8080 --config dmarclens.toml
    """
    if hash_password:
        from dashboards.auth import hash_password as make_hash

        password = click.prompt("Dashboard password", hide_input=True, confirmation_prompt=True, err=True)
        if len(password) < 8:
            fail("use at least 8 characters", EXIT_USAGE)
        click.echo("[dashboard]")
        click.echo(f'password_hash = "{make_hash(password)}"')
        return
    path = resolve_db(db, config)
    if not path.exists():
        fail(f"database {path}: not found (run `dmarclens ingest PATH --db {path}` or `dmarclens demo` first)")
    sys.exit(launch_dashboard(path, host, port, open_browser=open_browser, config=config))


@cli.command()
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
    from dmarclens.pipeline import ingest_paths

    path = resolve_db(db)
    folder = Path(samples) if samples else Path("sample_reports")
    if not folder.is_dir():
        import tempfile

        from dmarclens.generator import write_samples

        folder = Path(tempfile.mkdtemp(prefix="dmarclens-samples-"))
        click.echo(f"dmarclens: no ./sample_reports here; generating samples into {folder}", err=True)
        write_samples(folder)
    from dmarclens.config import load_settings

    settings = run_guarded(load_settings, db=str(path))
    configure_security(settings)
    progress = Progress(enabled=True)
    summary = run_guarded(ingest_paths, [folder], path, command="demo", progress=progress,
                          after_commit=classify_hook(settings))
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
    """Run detection after the demo ingest when the detector is available."""
    try:
        from dmarclens.detect.run import detect_and_store  # type: ignore[import-not-found]
    except ImportError:
        return
    try:
        detect_and_store(path)
    except DmarcLensError as e:
        click.echo(f"dmarclens: warning: detection skipped: {e}", err=True)


@cli.command("schema-docs")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="docs/schema.md", show_default=True)
@click.option("--check", is_flag=True, help="Exit 1 if the file differs from the live schema instead of writing it.")
def schema_docs(output: str, check: bool) -> None:
    """Write docs/schema.md from a freshly migrated database's own comments.

    \b
    Example:
      dmarclens schema-docs --check
    """
    from dmarclens.store.docs import render_schema_markdown

    text = run_guarded(render_schema_markdown)
    out = Path(output)
    if check:
        current = out.read_text(encoding="utf-8") if out.exists() else ""
        if current != text:
            fail(f"{out} is stale; run `dmarclens schema-docs` to regenerate it")
        click.echo(f"{out} is up to date", err=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}", err=True)


_OWN_PROCESS = False
"""True when ``main()`` runs, i.e. the process is the ``dmarclens`` command
itself and not a program (or test) that invokes the click group."""


def main() -> None:
    global _OWN_PROCESS
    _OWN_PROCESS = True
    try:
        cli(prog_name="dmarclens")
    finally:
        # Python's exit-time collections walk every object still alive
        # (modules, lookup tables, caches): a tenth of a second after a big
        # ingest, to free memory the process returns anyway. Frozen objects
        # are skipped; files and the database are closed by then.
        import gc

        gc.freeze()
