"""Forged-report defence in the database (migration 0007): report trust rows and
reports stored apart.

With ``domains = [...]`` configured, a report whose policy domain is not one
of them (or a subdomain of one) is stored apart: its report row is kept (so
duplicates are still recognised and nothing is lost) but its records go to
``foreign_records`` instead of ``records``, so no view, rollup, detector or
alert counts them. When the list changes, reports move between the two on
the next ingest. The verdicts come from ``dmarclens.ingest.trust``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dmarclens.core.domains import is_owned
from dmarclens.core.models import NOT_MAIL, Verdict

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)


@dataclass
class TrustRow:
    """One report_trust row waiting for its transaction."""

    report_key: str
    domain: str
    owned: bool
    verdict: Verdict = field(default=NOT_MAIL)


def _has_trust_tables(con: duckdb.DuckDBPyConnection) -> bool:
    # fetchall, not fetchone: DuckDB keeps a half-read result open and refuses the next register()
    [(n,)] = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'report_trust'"
    ).fetchall()
    return bool(n)


def _record_columns(con: duckdb.DuckDBPyConnection) -> str:
    """Columns shared by records and foreign_records (records may gain columns in later migrations)."""
    rows = con.execute(
        """SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = 'foreign_records'
           AND column_name IN (SELECT column_name FROM duckdb_columns()
                               WHERE schema_name = 'main' AND table_name = 'records')
           ORDER BY column_index"""
    ).fetchall()
    return ", ".join(f'"{r[0]}"' for r in rows)


def _move_records(con: duckdb.DuckDBPyConnection, keys: Sequence[str], *, to_foreign: bool) -> None:
    if not keys:
        return
    cols = _record_columns(con)
    src, dst = ("records", "foreign_records") if to_foreign else ("foreign_records", "records")
    con.execute(f"INSERT INTO {dst} ({cols}) SELECT {cols} FROM {src} WHERE report_key IN (SELECT unnest(?))",
                [list(keys)])
    con.execute(f"DELETE FROM {src} WHERE report_key IN (SELECT unnest(?))", [list(keys)])


def store_trust(con: duckdb.DuckDBPyConnection, rows: Iterable[TrustRow]) -> int:
    """Insert report_trust rows for reports just stored, and move non-owned reports' records apart.

    Runs inside the caller's transaction, after the records were inserted and
    before the rollup is updated, so a foreign report never reaches a rollup.
    """
    rows = list(rows)
    if not rows or not _has_trust_tables(con):
        return 0
    import pyarrow as pa

    # One Arrow insert per batch: executemany costs milliseconds per row in DuckDB.
    # Every column typed: pyarrow imports pandas (~0.2 s, ~45 MB) to infer an untyped list.
    table = pa.table({
        "report_key": pa.array([r.report_key for r in rows], pa.string()),
        "domain": pa.array([r.domain for r in rows], pa.string()),
        "owned": pa.array([r.owned for r in rows], pa.bool_()),
        "mail_auth": pa.array([r.verdict.mail_auth for r in rows], pa.string()),
        "auth_method": pa.array([r.verdict.method for r in rows], pa.string()),
        "auth_domain": pa.array([r.verdict.domain for r in rows], pa.string()),
        "auth_detail": pa.array([r.verdict.detail[:500] for r in rows], pa.string()),
        "checked_at": pa.array([datetime.now(UTC)] * len(rows), pa.timestamp("us", tz="UTC")),
    })
    con.register("_dl_new_trust", table)
    try:
        con.execute("INSERT INTO report_trust (report_key, domain, owned, mail_auth, auth_method, auth_domain, "
                    "auth_detail, checked_at) SELECT * FROM _dl_new_trust")
    finally:
        con.unregister("_dl_new_trust")
    foreign = [r.report_key for r in rows if not r.owned]
    _move_records(con, foreign, to_foreign=True)
    return len(foreign)


def upgrade_trust(con: duckdb.DuckDBPyConnection, report_key: str, new: Verdict) -> bool:
    """A byte-identical copy arrived with better authentication: keep the better verdict."""
    if new.mail_auth != "verified" or not _has_trust_tables(con):
        return False
    found = con.execute("SELECT mail_auth FROM report_trust WHERE report_key = ?", [report_key]).fetchall()
    if not found or found[0][0] == "verified":
        return False
    con.execute(
        "UPDATE report_trust SET mail_auth = ?, auth_method = ?, auth_domain = ?, auth_detail = ?, checked_at = ? "
        "WHERE report_key = ?",
        [new.mail_auth, new.method, new.domain, f"{new.detail} (a later identical copy)"[:500], datetime.now(UTC),
         report_key],
    )
    return True


def apply_domain_list(con: duckdb.DuckDBPyConnection, domains: Sequence[str]) -> tuple[str, ...]:
    """Bring stored reports in line with the configured domain list; return the list in force.

    Called once per ingest run inside its first transaction. The database
    remembers the list (``owned_domains``): a run with no list configured
    (cron from another directory, a one-off ``ingest``) uses the remembered
    one instead of exposing hidden reports again. Cheap when the list is
    unchanged. When it changed, every report is reclassified: newly foreign
    ones leave ``records`` and their domains' rollup rows are dropped; newly
    owned ones come back and are rolled up.
    """
    wanted = sorted({d.strip().strip(".").lower() for d in domains if d.strip()})
    if not _has_trust_tables(con):
        return tuple(wanted)
    have = sorted(r[0] for r in con.execute("SELECT domain FROM owned_domains").fetchall())
    if not wanted or wanted == have:
        return tuple(have)
    now = datetime.now(UTC)
    con.execute("DELETE FROM owned_domains")
    if wanted:
        con.executemany("INSERT INTO owned_domains VALUES (?, ?)", [[d, now] for d in wanted])
    # Reports stored before 0007 (or while no trust row was written) get one now.
    con.execute(
        "INSERT INTO report_trust (report_key, domain, owned, mail_auth, auth_detail, checked_at) "
        "SELECT report_key, domain, true, 'not_checked', 'stored before mail authentication was recorded', ? "
        "FROM reports WHERE report_key NOT IN (SELECT report_key FROM report_trust)", [now],
    )
    rows = con.execute("SELECT report_key, domain, owned FROM report_trust").fetchall()
    hide = [k for k, d, owned in rows if owned and not is_owned(d, wanted)]
    show = [k for k, d, owned in rows if not owned and is_owned(d, wanted)]
    if hide:
        con.execute("UPDATE report_trust SET owned = false WHERE report_key IN (SELECT unnest(?))", [hide])
        _move_records(con, hide, to_foreign=True)
        hidden = set(hide)
        hidden_domains = sorted({d for k, d, _ in rows if k in hidden})
        from dmarclens.store import rollups

        [(exists,)] = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
            [rollups.ROLLUP_TABLE]).fetchall()
        if exists:
            # A domain is hidden whole, so all of its rollup rows go.
            con.execute(f"DELETE FROM {rollups.ROLLUP_TABLE} WHERE domain IN (SELECT unnest(?))", [hidden_domains])
    if show:
        con.execute("UPDATE report_trust SET owned = true WHERE report_key IN (SELECT unnest(?))", [show])
        _move_records(con, show, to_foreign=False)
        from dmarclens.store import rollups

        rollups.add_for_reports(con, show)
    if hide or show:
        log.warning("domain list changed: %d report(s) now hidden as not yours, %d shown again", len(hide), len(show))
    return tuple(wanted)
