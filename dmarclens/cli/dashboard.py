"""`dmarclens dashboard`: the Streamlit dashboard on the database, and its password hash."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from dmarclens.cli.common import EXIT_USAGE, config_option, db_option, fail, resolve_db, run_guarded
from dmarclens.core.net import is_loopback


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
    from dashboards.launch import app_path, streamlit_command
    from dmarclens.core.config import load_settings

    app = app_path()
    if not app.is_file():
        fail(f"dashboard app not found at {app}; is the package installed completely?")
    settings = run_guarded(load_settings, config=config)
    password_hash = configured_hash(settings.raw)
    if password_hash and not password_hash.startswith("scrypt$"):
        fail("the dashboard password hash is not one dmarclens made; create one with "
             "`dmarclens dashboard --hash-password`", EXIT_USAGE)
    if not is_loopback(host) and not password_hash:
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


@click.command()
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
