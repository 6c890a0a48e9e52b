"""Typed settings for `dmarclens fetch`: one ``ImapSettings`` per mailbox.

Kept apart from ``core/config.py`` because the IMAP keys are many and only `fetch`
needs them. Precedence is the project's usual one, per key:
CLI flag > environment (``DMARCLENS_IMAP_<KEY>``) > config file > default.

The config file has an ``[imap]`` table (defaults for every mailbox) and any
number of ``[[mailboxes]]`` tables (each one mailbox; its keys override
``[imap]``). Without ``[[mailboxes]]`` the ``[imap]`` table is the one mailbox.

Secrets are never a config value: a ``password`` key is refused with a hint.
The password comes from ``--password-file``, ``DMARCLENS_IMAP_PASSWORD``,
``password_file`` or ``password_command`` (in that order); an OAuth2 access
token from ``oauth2_token_command``. The commands are run at every (re)connect,
so short-lived tokens are fresh; their output is held in memory only.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

from dmarclens.core.errors import ConfigError

TlsMode = Literal["implicit", "starttls", "none"]
TLS_MODES: tuple[TlsMode, ...] = ("implicit", "starttls", "none")
PASSWORD_ENV = "DMARCLENS_IMAP_PASSWORD"
_SECRET_KEYS = {"password", "pass", "secret", "token", "oauth2_token", "access_token"}


@dataclass(frozen=True)
class ImapSettings:
    """Everything needed to drain one IMAP folder into the database."""

    host: str
    """IMAP server name or address."""

    user: str
    """Login name (often the full rua address)."""

    port: int | None = None
    """TCP port; default 993 for implicit TLS, 143 for STARTTLS or none."""

    tls: TlsMode = "implicit"
    """implicit (IMAPS), starttls (upgrade on the plain port) or none (plain text; loopback only is sane)."""

    ca_file: Path | None = None
    """PEM file of CA certificates to trust instead of the system store (private CA, self-signed server)."""

    insecure: bool = False
    """Skip certificate checks entirely. Anyone on the path can then read the password; warned about loudly."""

    folder: str = "INBOX"
    """Folder the reports arrive in. '/' separates levels and is mapped to the server's own separator."""

    archive_folder: str = "DMARC/Archive"
    """Where a message goes once its reports are stored (created if absent)."""

    invalid_folder: str = "DMARC/Invalid"
    """Where a message goes when it holds no usable report (junk, corrupt attachment); created if absent."""

    batch_size: int = 100
    """Messages fetched per FETCH and stored per transaction; bounds memory on big mailboxes."""

    since: date | None = None
    """Only messages received on or after this day (IMAP SEARCH SINCE). Older mail is left alone."""

    password_file: Path | None = None
    """File whose first line is the password."""

    password_command: str | None = None
    """Command printing the password on stdout (e.g. `pass show mail/dmarc`); no shell, split like a shell would."""

    oauth2_token_command: str | None = None
    """Command printing an OAuth2 access token; when set, login uses SASL XOAUTH2 instead of a password."""

    timeout: float = 30.0
    """Seconds to wait for the server on connect and on each command."""

    idle_renew: float = 25 * 60
    """Watch mode: re-issue IDLE after this many seconds (RFC 2177 says servers may drop it after 29 min)."""

    poll_interval: float = 60.0
    """Watch mode on a server without IDLE: seconds between checks."""

    max_backoff: float = 300.0
    """Longest wait between reconnect attempts (the wait doubles from 1 s up to this)."""

    retries: int = 3
    """One-shot mode: reconnect attempts after a dropped connection before giving up (exit 1)."""

    max_message_mb: float = 100.0
    """Messages larger than this are not downloaded; they go to the invalid folder with the reason."""

    name: str | None = None
    """Short name of a [[mailboxes]] entry, for --mailbox and log lines."""

    @property
    def effective_port(self) -> int:
        if self.port:
            return self.port
        return 993 if self.tls == "implicit" else 143

    @property
    def label(self) -> str:
        """How this mailbox is named in every message: user@host[:port]/folder (never a secret)."""
        default = 993 if self.tls == "implicit" else 143
        port = f":{self.effective_port}" if self.effective_port != default else ""
        return f"{self.user}@{self.host}{port}/{self.folder}"

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)


# ---------------------------------------------------------------------- loading

_FIELDS = {f.name for f in fields(ImapSettings)}
_ENV_KEYS = sorted(_FIELDS - {"name"})


def _coerce(key: str, value: Any, where: str) -> Any:
    """Turn a TOML/env/CLI value into the field's type, or explain what is wrong."""
    if value is None:
        return None
    try:
        if key in {"port", "batch_size", "retries"}:
            number = int(value)
            if number < (0 if key == "retries" else 1):
                raise ValueError
            return number
        if key in {"timeout", "idle_renew", "poll_interval", "max_backoff", "max_message_mb"}:
            amount = float(value)
            if amount <= 0:
                raise ValueError
            return amount
        if key == "insecure":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError
        if key == "tls":
            text = str(value).strip().lower()
            aliases = {"ssl": "implicit", "imaps": "implicit", "plain": "none", "off": "none"}
            text = aliases.get(text, text)
            if text not in TLS_MODES:
                raise ValueError
            return text
        if key == "since":
            if isinstance(value, date):
                return value
            return date.fromisoformat(str(value).strip())
        if key in {"ca_file", "password_file"}:
            return Path(str(value)).expanduser()
        text = str(value).strip()
        if key in {"host", "user", "folder", "archive_folder", "invalid_folder"} and not text:
            raise ValueError
        return text
    except (TypeError, ValueError) as e:
        hint = {
            "tls": "one of implicit, starttls, none",
            "since": "a date like 2026-01-31",
            "insecure": "true or false",
        }.get(key, "a positive number" if key not in {"host", "user"} else "not empty")
        raise ConfigError(f"{where}: {key} = {value!r} is not valid ({hint})") from e


def _check_keys(table: dict[str, Any], where: str) -> None:
    for key in table:
        if key.lower() in _SECRET_KEYS:
            raise ConfigError(
                f"{where}: `{key}` is not allowed in a config file (secrets never live there); "
                f"use password_file, password_command, oauth2_token_command or ${PASSWORD_ENV}"
            )
        if key not in _FIELDS:
            raise ConfigError(f"{where}: unknown key `{key}` (known: {', '.join(sorted(_FIELDS))})")


def load_imap_settings(
    raw: dict[str, Any],
    cli: dict[str, Any] | None = None,
    *,
    mailbox: str | None = None,
    env: dict[str, str] | None = None,
) -> list[ImapSettings]:
    """Build one ImapSettings per configured mailbox.

    ``raw`` is the whole parsed TOML (``Settings.raw``); ``cli`` holds the
    flags the user gave (None values are ignored) and overrides every mailbox;
    ``mailbox`` keeps only the [[mailboxes]] entry of that name.
    """
    env = dict(os.environ) if env is None else env
    base = raw.get("imap") or {}
    if not isinstance(base, dict):
        raise ConfigError("config: [imap] must be a table")
    _check_keys(base, "config [imap]")
    entries = raw.get("mailboxes") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("config: mailboxes must be an array of tables ([[mailboxes]])")
    for i, entry in enumerate(entries):
        _check_keys(entry, f"config [[mailboxes]] #{i + 1}")
    tables = [{**base, **entry} for entry in entries] or [dict(base)]
    if mailbox is not None:
        tables = [t for t in tables if t.get("name") == mailbox]
        if not tables:
            names = [str(e.get("name")) for e in entries if e.get("name")]
            raise ConfigError(f"no [[mailboxes]] entry named {mailbox!r} (named: {', '.join(names) or 'none'})")
    env_values = {k: env[f"DMARCLENS_IMAP_{k.upper()}"] for k in _ENV_KEYS if env.get(f"DMARCLENS_IMAP_{k.upper()}")}
    cli_values = {k: v for k, v in (cli or {}).items() if v is not None}
    unknown = set(cli_values) - _FIELDS
    if unknown:
        raise ValueError(f"unknown ImapSettings fields: {sorted(unknown)}")
    out: list[ImapSettings] = []
    for i, table in enumerate(tables):
        where = f"mailbox {table.get('name') or i + 1}"
        merged: dict[str, Any] = {}
        for source_name, source in (("config", table), ("environment", env_values), ("command line", cli_values)):
            for key, value in source.items():
                merged[key] = _coerce(key, value, f"{where} ({source_name})")
        missing = [k for k in ("host", "user") if not merged.get(k)]
        if missing:
            flags = " and ".join(f"--{k}" for k in missing)
            raise ConfigError(
                f"{where}: no IMAP {' or '.join(missing)} given (use {flags}, "
                f"DMARCLENS_IMAP_{missing[0].upper()}, or [imap] in the config file)"
            )
        settings = ImapSettings(**merged)
        if settings.insecure and settings.ca_file:
            raise ConfigError(f"{where}: --insecure and --ca-file contradict each other; choose one")
        if settings.ca_file and not settings.ca_file.is_file():
            raise ConfigError(f"{where}: CA file {settings.ca_file} not found")
        if settings.password_file and not settings.password_file.is_file():
            raise ConfigError(f"{where}: password file {settings.password_file} not found")
        if settings.folder in {settings.archive_folder, settings.invalid_folder}:
            raise ConfigError(f"{where}: the archive/invalid folder must differ from the folder read ({settings.folder})")
        out.append(settings)
    return out


def with_overrides(settings: ImapSettings, **changes: Any) -> ImapSettings:
    """A copy with some fields changed (used by tests and the benchmark)."""
    return replace(settings, **changes)


# ---------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class Credentials:
    """What a login needs. The secret fields never show in repr() or logs."""

    user: str
    password: str | None = field(default=None, repr=False)
    oauth2_token: str | None = field(default=None, repr=False)

    @property
    def secrets(self) -> list[str]:
        """Values to scrub from any text that might reach a log or error."""
        return [s for s in (self.password, self.oauth2_token) if s]


def _run_secret_command(command: str, what: str, label: str, timeout: float = 60.0) -> str:
    """Run a password/token command; its output is the secret, its stderr is not shown (may echo it)."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise ConfigError(f"{label}: {what} cannot be split into words: {e}") from e
    if not argv:
        raise ConfigError(f"{label}: {what} is empty")
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise ConfigError(f"{label}: {what}: program {argv[0]!r} not found") from e
    except subprocess.TimeoutExpired as e:
        raise ConfigError(f"{label}: {what} {argv[0]!r} did not finish within {timeout:.0f}s") from e
    except OSError as e:
        raise ConfigError(f"{label}: {what} {argv[0]!r} could not run: {e.strerror}") from e
    if proc.returncode != 0:
        raise ConfigError(f"{label}: {what} {argv[0]!r} failed with exit code {proc.returncode}")
    lines = proc.stdout.decode("utf-8", "replace").splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigError(f"{label}: {what} {argv[0]!r} printed nothing")
    return secret


def resolve_credentials(
    settings: ImapSettings, *, cli_password_file: Path | None = None, env: dict[str, str] | None = None
) -> Credentials:
    """Fetch the password or token for one login, from the first source that has one.

    Order: OAuth2 token command (if configured) → --password-file →
    $DMARCLENS_IMAP_PASSWORD → password_file → password_command.
    """
    env = dict(os.environ) if env is None else env
    label = f"imap {settings.label}"
    if settings.oauth2_token_command:
        token = _run_secret_command(settings.oauth2_token_command, "oauth2_token_command", label)
        return Credentials(user=settings.user, oauth2_token=token)
    password: str | None = None
    if cli_password_file is not None:
        password = _read_password_file(cli_password_file, label)
    if password is None and env.get(PASSWORD_ENV):
        password = env[PASSWORD_ENV]
    if password is None and settings.password_file is not None:
        password = _read_password_file(settings.password_file, label)
    if password is None and settings.password_command:
        password = _run_secret_command(settings.password_command, "password_command", label)
    if password is None:
        raise ConfigError(
            f"{label}: no password: set ${PASSWORD_ENV}, pass --password-file FILE, or set password_file / "
            "password_command (or oauth2_token_command) in the config"
        )
    return Credentials(user=settings.user, password=password)


def _read_password_file(path: Path, label: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{label}: cannot read password file {path}: {e.strerror}") from e
    lines = text.splitlines()
    password = lines[0].rstrip("\r\n") if lines else ""
    if not password:
        raise ConfigError(f"{label}: password file {path} is empty")
    return password
