"""Typed settings with one precedence rule everywhere:
CLI flag > environment (``DMARCLENS_*``) > ``dmarclens.toml`` > default.

Secrets (IMAP password, tokens) are never read from this file's plain values
by other modules without going through a dedicated secret loader, so that they
cannot end up in argv, logs or ``--json`` output.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmarclens.core.errors import ConfigError

DEFAULT_DB = "dmarclens.duckdb"
DEFAULT_CONFIG_NAMES = ("dmarclens.toml",)


@dataclass
class Settings:
    """Settings shared by every command."""

    db: Path = field(default_factory=lambda: Path(DEFAULT_DB))
    """DuckDB file; created on first ingest."""

    domains: list[str] = field(default_factory=list)
    """Policy domains the user owns. Reports for other domains are stored apart
    and hidden by default (anyone can mail a forged report to a rua address)."""

    lock_timeout: float = 30.0
    """Seconds to keep retrying when another process holds the DuckDB write lock."""

    workers: int = 0
    """Parser processes for big batches; 0 = one per core."""

    raw: dict[str, Any] = field(default_factory=dict)
    """The whole parsed TOML, for stage-specific sections ([imap], [detect] ...)."""


def find_config(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The config file to read: --config, else $DMARCLENS_CONFIG, else ./dmarclens.toml."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path}: not found")
        return path
    env = os.environ.get("DMARCLENS_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"config file {path} (from DMARCLENS_CONFIG): not found")
        return path
    for name in DEFAULT_CONFIG_NAMES:
        path = Path(name)
        if path.is_file():
            return path
    return None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from e
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from e


def load_settings(
    *, config: str | os.PathLike[str] | None = None, db: str | os.PathLike[str] | None = None
) -> Settings:
    """Build Settings from the config file, the environment and CLI values."""
    path = find_config(config)
    raw = read_toml(path) if path else {}
    core = raw.get("dmarclens", raw)
    settings = Settings(raw=raw)
    db_value = db or os.environ.get("DMARCLENS_DB") or core.get("db")
    if db_value:
        settings.db = Path(db_value).expanduser()
    domains = os.environ.get("DMARCLENS_DOMAINS")
    if domains:
        settings.domains = [d.strip().lower() for d in domains.split(",") if d.strip()]
    elif isinstance(core.get("domains"), list):
        settings.domains = [str(d).strip().lower() for d in core["domains"]]
    if "lock_timeout" in core:
        settings.lock_timeout = float(core["lock_timeout"])
    env_lock = os.environ.get("DMARCLENS_LOCK_TIMEOUT")
    if env_lock:
        try:
            settings.lock_timeout = float(env_lock)
        except ValueError as e:
            raise ConfigError(f"DMARCLENS_LOCK_TIMEOUT={env_lock!r}: not a number") from e
    if "workers" in core:
        settings.workers = int(core["workers"])
    return settings
