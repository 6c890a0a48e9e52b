"""One error root so the CLI can turn any expected failure into one clear line
and the right exit code, while real bugs still surface as tracebacks."""

from __future__ import annotations


class DmarcLensError(Exception):
    """Root of every error dmarclens raises on purpose."""

    exit_code = 1


class ConfigError(DmarcLensError):
    """Settings are missing or contradict each other."""

    exit_code = 2


class SourceError(DmarcLensError):
    """An input (file, folder, mailbox) cannot be read at all."""


class ReportParseError(DmarcLensError):
    """One input item is not a report we can store; the batch goes on."""


class StoreError(DmarcLensError):
    """The database cannot be opened, migrated or written."""


class LockedError(StoreError):
    """Another process holds the DuckDB write lock and kept it past our retries."""


class UnsupportedReport(ReportParseError):
    """A recognised report kind that is not aggregate data (RUF, SMTP TLS)."""
