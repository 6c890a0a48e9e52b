"""`dmarclens fetch`: the thin click layer over ``dmarclens.ingest.mailbox``.

Only argument handling and output live here; what gets stored and moved is
decided in ``dmarclens.ingest.mailbox``. There is deliberately no ``--password``
option: a password in argv is visible to every user via ``ps``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from dmarclens.cli.common import config_option, configure_security, db_option, fail, run_guarded, warn


class _FetchProgress:
    """One self-overwriting line per mailbox on a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.shown = False

    def __call__(self, stats: Any) -> None:
        if not self.enabled:
            return
        total = max(stats.found, stats.processed + stats.left)
        width = 24
        filled = int(width * stats.processed / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(
            f"\r\x1b[2Kfetch {stats.label}: [{bar}] {stats.processed}/{total} messages "
            f"({stats.archived} archived, {stats.invalid} invalid)"
        )
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False


@click.command()
@click.option("--watch", is_flag=True, help="Keep running: IDLE on the folder and ingest new mail as it arrives.")
@db_option
@config_option
@click.option("--mailbox", "mailbox", default=None, help="Only the [[mailboxes]] entry with this name.")
@click.option("--host", default=None, help="IMAP server.")
@click.option("--port", type=int, default=None, help="Port (default 993 for implicit TLS, else 143).")
@click.option("--user", default=None, help="Login name.")
@click.option("--tls", type=click.Choice(["implicit", "starttls", "none"]), default=None,
              help="implicit (IMAPS, default), starttls, or none (plain text).")
@click.option("--ca-file", type=click.Path(dir_okay=False), default=None,
              help="PEM CA bundle to trust for the server certificate (private CA, self-signed).")
@click.option("--insecure", is_flag=True, default=False,
              help="Do not check the server certificate at all (unsafe; prints a warning).")
@click.option("--folder", default=None, help="Folder to read reports from (default INBOX).")
@click.option("--archive-folder", default=None, help="Where processed mail goes (default DMARC/Archive).")
@click.option("--invalid-folder", default=None,
              help="Where mail without a usable report goes (default DMARC/Invalid).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Messages per FETCH and per database transaction (default 100).")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, metavar="YYYY-MM-DD",
              help="Only mail received on or after this day (YYYY-MM-DD).")
@click.option("--password-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the password (first line). Else $DMARCLENS_IMAP_PASSWORD or password_command.")
@click.option("--oauth2-token-command", default=None,
              help="Command printing an OAuth2 access token; logs in with XOAUTH2 (Microsoft 365, Gmail).")
@click.option("--dry-run", is_flag=True, help="Read and parse only: store nothing, move nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
def fetch(
    watch: bool, db: str | None, config: str | None, mailbox: str | None, host: str | None, port: int | None,
    user: str | None, tls: str | None, ca_file: str | None, insecure: bool, folder: str | None,
    archive_folder: str | None, invalid_folder: str | None, batch_size: int | None, since: datetime | None,
    password_file: str | None, oauth2_token_command: str | None, dry_run: bool, as_json: bool,
) -> None:
    """Fetch DMARC report mail from IMAP into the database.

    Each message is fetched, its reports are parsed and committed, and only
    then is it moved: to the archive folder when its reports are stored (or
    were already), to the invalid folder when something in it could not be
    used (junk, corrupt attachment; the reason is in ingest_items). A run
    that dies half-way loses nothing and counts nothing twice.

    The password comes from $DMARCLENS_IMAP_PASSWORD, --password-file, or
    password_command in the config; never from the command line. Several
    mailboxes can be listed as [[mailboxes]] in the config file.

    Without --watch the run ends when the folder is drained (for cron or a
    systemd timer); a second run on the same database and mailbox while one
    is going exits 0 and says so. With --watch it waits for new mail with
    IMAP IDLE, reconnects with backoff, and stops cleanly on SIGTERM/SIGINT.

    \b
    Exit codes: 0 ok; 3 finished but some messages were rejected (moved to the
    invalid folder); 1 could not run (server, login, certificate, folder,
    database); 2 usage error.

    \b
    Example:
      export DMARCLENS_IMAP_PASSWORD=...   # or --password-file ~/.dmarc-imap-pass
      dmarclens fetch --host imap.example.com --user dmarc@example.com --db reports.duckdb
      dmarclens fetch --config dmarclens.toml --watch
      dmarclens fetch --host 127.0.0.1 --tls starttls --ca-file ca.pem --user rua --dry-run --json
    """
    from dmarclens.core.config import load_settings
    from dmarclens.ingest.mailbox import FetchOptions, run_fetch
    from dmarclens.sources.imap.settings import load_imap_settings

    if watch and dry_run:
        raise click.UsageError("--dry-run cannot be combined with --watch")
    settings = run_guarded(load_settings, config=config, db=db)
    cli_values: dict[str, Any] = {
        "host": host, "port": port, "user": user, "tls": tls, "ca_file": ca_file,
        "insecure": True if insecure else None, "folder": folder, "archive_folder": archive_folder,
        "invalid_folder": invalid_folder, "batch_size": batch_size,
        "since": since.date() if since else None, "oauth2_token_command": oauth2_token_command,
    }
    mailboxes = run_guarded(load_imap_settings, settings.raw, cli_values, mailbox=mailbox)
    configure_security(settings)
    if password_file is not None and not Path(password_file).is_file():
        fail(f"password file {password_file} not found", 2)
    level = logging.getLogger("dmarclens").getEffectiveLevel()
    if watch and logging.INFO < level < logging.ERROR:
        logging.getLogger("dmarclens.ingest.mailbox").setLevel(logging.INFO)  # a service should say what it ingested
    progress = _FetchProgress(enabled=not as_json and not watch)
    from dmarclens.ingest.followup import classify_hook

    options = FetchOptions(
        db_path=settings.db, dry_run=dry_run, lock_timeout=settings.lock_timeout,
        password_file=Path(password_file) if password_file else None, on_batch=progress,
        # Traffic classes after every run that stored something, on the
        # connection it committed with (in --watch: after every wake-up).
        after_commit=None if dry_run else classify_hook(settings, warn),
    )
    result = run_guarded(run_fetch, mailboxes, options, watch_mode=watch)
    progress.done()
    for m in result.mailboxes:
        if m.error:
            click.echo(f"dmarclens: error: {m.error}", err=True)
    quiet = logging.getLogger("dmarclens").getEffectiveLevel() >= logging.ERROR  # -q: only errors (cron)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    elif not quiet:
        _echo_summary(result, settings.db)
    sys.exit(result.exit_code)


def _echo_summary(result: Any, db: Path) -> None:
    s = result.summary
    verb = "would move" if result.dry_run else "moved"
    for m in result.mailboxes:
        if m.locked:
            click.echo(f"dmarclens: {m.label}: another fetch is running on it; skipped", err=True)
            continue
        if m.error and not m.processed:
            continue
        extra = f", {m.left} left in the folder" if m.left and not result.dry_run else ""
        click.echo(
            f"dmarclens: {m.label}: {m.processed} message(s), {verb} {m.archived} to archive and "
            f"{m.invalid} to invalid{extra}",
            err=True,
        )
    if all(m.error or m.locked for m in result.mailboxes) and not s.items:
        return  # the error lines above say it all
    prefix = "dry run, nothing stored: " if result.dry_run else ""
    click.echo(
        f"dmarclens: {prefix}{s.stored} stored, {s.duplicates} duplicates, {s.rejected} rejected, "
        f"{s.ignored} other report kinds; {s.records} records, {s.messages} messages "
        f"in {s.seconds:.1f}s → {db}",
        err=True,
    )
