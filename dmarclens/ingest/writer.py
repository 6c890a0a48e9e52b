"""Ingest orchestration: RawItems → parse → store, in committed batches.

Parsing happens with no database connection open; each batch is then written
in one short transaction (reports, records, IP facts, the ingest_items ledger)
and the connection is closed again, so a dashboard or an analyst waiting on
the file is never blocked for longer than one batch write.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dmarclens.core.domains import is_owned
from dmarclens.core.errors import StoreError
from dmarclens.core.models import ItemResult, RawItem, RunSummary
from dmarclens.enrich.offline import shared_enricher
from dmarclens.ingest.parsed import Parsed, base_result
from dmarclens.ingest.trust import verdict
from dmarclens.sources import mailauth
from dmarclens.store import db as dbmod
from dmarclens.store import rollups, write
from dmarclens.store.trust import TrustRow, apply_domain_list, store_trust, upgrade_trust

if TYPE_CHECKING:
    import duckdb

    from dmarclens.sources.files import FileTask

log = logging.getLogger(__name__)

ProgressFn = Callable[[ItemResult], None]


@dataclass
class Ingestor:
    """Stores parsed items into one DuckDB file; one instance per run."""

    db_path: Path
    command: str = "ingest"
    source_kind: str = "files"
    lock_timeout: float = 30.0
    batch_items: int = field(default_factory=lambda: _env_int("DMARCLENS_BATCH_ITEMS", 500))
    batch_records: int = 200_000
    batch_bytes: int = 128 * 1024 * 1024  # report XML held until the commit
    progress: ProgressFn | None = None
    workers: int = 1  # parsing processes; 0 = one per core (dmarclens.ingest.pool)
    domains: Sequence[str] | None = None  # the owner's domains; None = config/env (dmarclens.sources.mailauth)
    summary: RunSummary = field(default_factory=lambda: RunSummary(run_id=uuid.uuid4().hex[:16]))
    _pending: list[Parsed] = field(default_factory=list)
    _pending_records: int = 0
    _pending_bytes: int = 0
    _run_written: bool = False
    _domains: tuple[str, ...] = ()
    _started: float = field(default_factory=time.monotonic)
    _con: duckdb.DuckDBPyConnection | None = None  # kept between batches by run (_release), or opened early
    _con_since: float = 0.0
    _early: bool = False  # the connection was opened while a big report was parsed (_open_early)
    _hold: bool = False  # run() may keep the connection between batches
    after_commit: Callable[[duckdb.DuckDBPyConnection], None] | None = None
    """Called once, after the run's last commit, on the same connection, when
    the run stored something (the CLI classifies traffic there). What it
    does is its own transaction: an error in it is logged, never undoes the
    ingest, and never changes the run's result."""

    @property
    def run_id(self) -> str:
        return self.summary.run_id

    def run(self, raws: Iterable[RawItem | FileTask]) -> RunSummary:
        """Parse and store everything; the caller gets one summary."""
        from dmarclens.ingest.pool import POOL_BATCH_ITEMS, parse_all

        if self.workers != 1 and not os.environ.get("DMARCLENS_BATCH_ITEMS"):
            # With parse workers the single writer is the limit, and each
            # transaction costs ~0.1 s to open and checkpoint whatever its size.
            self.batch_items = max(self.batch_items, POOL_BATCH_ITEMS)
        self._hold = True
        try:
            for parsed in parse_all(raws, workers=self.workers, ahead=self.batch_items, on_wait=self._open_early,
                                    before_fork=lambda: self._release(force=True),
                                    spill_dir=str(Path(self.db_path).resolve().parent)):
                self.add(parsed)
            return self.finish()
        finally:
            self._release(force=True)

    def _open_early(self) -> None:
        """Open the database while a big report is parsed in another process.

        The writer would otherwise wait idle and then open it (on a new file,
        creating the schema takes ~0.1 s). Only for a report that starts a
        batch, and that batch is written as soon as anything else arrives
        (here or in ``add``), so the file is not held while more big reports
        are parsed.
        """
        if self._early and self._pending:
            self.flush()
        if not self._pending:
            if self._con is None:
                self._open()
            self._early = True

    def _open(self) -> duckdb.DuckDBPyConnection:
        self._con = dbmod.connect(self.db_path, lock_timeout=self.lock_timeout)
        # Every commit checkpoints, as a close would: rows committed but not
        # checkpointed stay in memory, and a connection kept across batches
        # would otherwise hold up to 16 MB of WAL worth of them.
        self._con.execute("SET checkpoint_threshold = '1MB'")
        self._con_since = time.monotonic()
        return self._con

    def _release(self, *, force: bool = False) -> None:
        """Close the connection unless ``run`` may keep it for the next batch.

        Opening costs a catalog read and closing a checkpoint (~0.1-0.2 s
        together), which with a batch every ~0.5 s was a large share of the
        one writer's time. ``run`` keeps it across back-to-back batches for
        at most ``HOLD_SECONDS``, then closes it so a dashboard or an analyst
        waiting on the file gets in; callers that add and flush themselves
        (``dmarclens fetch``, between IMAP round trips) get it closed at once.
        """
        con = self._con
        if con is None:
            return  # before importing duckdb: this runs before the big-report child is forked
        import duckdb

        if force or not self._hold or time.monotonic() - self._con_since >= HOLD_SECONDS:
            self._con = None
            with contextlib.suppress(duckdb.Error):
                con.close()

    def add(self, parsed: Parsed) -> None:
        self._pending.append(parsed)
        if parsed.item and parsed.item.report:
            self._pending_records += len(parsed.item.report.records)
            self._pending_bytes += len(parsed.item.raw_xml or parsed.raw_gz or b"")
        if (len(self._pending) >= self.batch_items or self._pending_records >= self.batch_records
                or self._pending_bytes >= self.batch_bytes or (self._early and len(self._pending) > 1)):
            self.flush()

    def flush(self, *, finished: bool = False) -> list[ItemResult]:
        """Write pending items in one transaction; return their results."""
        pending, self._pending, self._pending_records = self._pending, [], 0
        self._pending_bytes = 0
        if not pending and not finished:
            return []
        results: list[ItemResult] = []
        self._early = False
        con = self._con if self._con is not None else self._open()
        try:
            # One DuckDB thread: a batch write is a few bulk INSERTs, and parse
            # workers use the other cores; more threads only cost ~20 MB RSS.
            con.execute("SET threads = 1")
            results = dbmod.bounded(con, lambda: self._transaction(con, pending, finished),
                                    what=f"writing a batch to {self.db_path}")
            for p in pending:  # committed: the rows and IP facts are in DuckDB, do not hold them
                release = getattr(p.item.report.records, "release", None) if p.item and p.item.report else None
                if release is not None:
                    release()
                p.ip_facts = None
            if finished and self.after_commit is not None and self.summary.stored:
                self._after_commit(con)
        except BaseException:
            self._release(force=True)
            raise
        self._release(force=finished)
        self._run_written = True
        if self.progress:
            for r in results:
                self.progress(r)
        return results

    def _transaction(self, con: duckdb.DuckDBPyConnection, pending: list[Parsed], finished: bool) -> list[ItemResult]:
        """Write ``pending`` in one transaction and commit it; on any error
        roll back and leave the summary as it was, so the batch can be
        written again (``dbmod.bounded`` does, if DuckDB ran out of memory)."""
        import duckdb

        results: list[ItemResult] = []
        try:
            with dbmod.transaction(con):
                if not self._run_written:
                    write.start_run(con, self.run_id, self.command, self.source_kind)
                wanted = mailauth.current().domains if self.domains is None else self.domains
                self._domains = apply_domain_list(con, wanted)  # cheap unless the list changed
                results = self._write(con, pending)
                for r in results:
                    self.summary.add(r)
                self.summary.seconds = time.monotonic() - self._started
                write.update_run(con, self.summary, finished=finished)
        except BaseException as e:
            # The items were not stored; forget their counts so a retry is exact.
            for r in results:
                self.summary.items.remove(r)
            self.summary = _recount(self.summary)
            if isinstance(e, duckdb.Error):
                raise StoreError(
                    f"database {self.db_path}: writing a batch of {len(pending)} item(s) failed and was "
                    f"rolled back, nothing of it is stored ({' '.join(str(e).split())[:300]})"
                ) from e
            raise
        return results

    def _after_commit(self, con: duckdb.DuckDBPyConnection) -> None:
        assert self.after_commit is not None
        try:
            con.execute("RESET threads")  # the batch writes used one; the hook may scan the whole file
            self.after_commit(con)
        except Exception as e:  # noqa: BLE001 - the ingest is committed; this must not undo or fail it
            log.warning("database %s: after the ingest: %s", self.db_path, " ".join(str(e).split())[:300])

    def finish(self) -> RunSummary:
        self.flush(finished=True)
        return self.summary

    def _write(self, con: duckdb.DuckDBPyConnection, pending: list[Parsed]) -> list[ItemResult]:
        keys = [_key(p) for p in pending if p.item and p.item.report]
        stored = write.existing_keys(con, keys)
        results: list[ItemResult] = []
        ips: set[str] = set()
        to_store: list[write.NewReport] = []
        facts = [t for p in pending if p.ip_facts is not None
                 for t in (p.ip_facts if isinstance(p.ip_facts, list) else [p.ip_facts])]
        trust: list[TrustRow] = []
        for p in pending:
            res = base_result(p.raw, sha256=p.sha256, size_bytes=p.size_bytes)
            if p.error is not None:
                res.reason = p.error
                log.warning("%s: %s", _label(p.raw), p.error)
            elif p.item is not None and p.item.report is None:
                res.outcome, res.kind = "ignored", p.item.kind
                res.reason = f"{p.item.summary or p.item.kind}: recorded, not aggregate data"
            elif p.item is not None and p.item.report is not None:
                report = p.item.report
                key = _key(p)
                raw_xml = p.item.raw_xml or b""  # None once pack_xml kept only its gzip
                res.kind, res.report_key, res.domain = "aggregate", key, report.domain
                sha = p.raw_sha256 or hashlib.sha256(raw_xml).hexdigest()
                if key in stored:
                    res.outcome = "duplicate"
                    same = stored[key] == sha
                    if same and p.raw.mail_auth is not None:
                        upgrade_trust(con, key, verdict(p.raw.mail_auth, report))
                    res.reason = (
                        "same report already stored" if same else
                        "same report (reporter, id, domain, interval) already stored with different "
                        "content; kept the first copy"
                    )
                    if not same:  # a receiver's correction, or someone pre-empting a real report: say so
                        log.warning("%s: %s", _label(p.raw), res.reason)
                else:
                    to_store.append(write.NewReport(report, p.raw.origin, p.raw.member, raw_xml=raw_xml,
                                                    raw_gz=p.raw_gz, raw_sha256=sha, key=key))
                    stored[key] = sha
                    owned = is_owned(report.domain, self._domains)
                    trust.append(TrustRow(key, report.domain, owned,
                                          verdict(p.raw.mail_auth, report)))
                    res.outcome = "stored"
                    notes = list(report.warnings)
                    if not owned:
                        notes.insert(0, f"stored apart and hidden: {report.domain} is not one of your domains")
                    if notes:
                        res.reason = "; ".join(notes)
                        log.warning("%s: stored, but %s", _label(p.raw), res.reason)
                    res.records = len(report.records)
                    res.messages = report.records.messages
                    if p.ip_facts is None:  # else the worker already looked its IPs up
                        ips.update(write.source_ips(report.records))
            results.append(res)
        # One bulk write per batch. The rows (and IP facts) are released only
        # after the commit (``flush``): a batch that fails is written again.
        write.insert_reports(con, to_store, run_id=self.run_id)
        # Before the rollup: a report for someone else's domain must never reach it.
        store_trust(con, trust)
        if ips or facts:
            write.upsert_ip_facts(con, ips, shared_enricher, facts=facts)
            del facts
        rollups.add_for_reports(con, [r.report_key for r in results if r.outcome == "stored" and r.report_key])
        write.insert_items(con, self.run_id, results)
        return results


HOLD_SECONDS = 2.0
"""Longest time ``Ingestor.run`` keeps the database open across batches."""


def _key(p: Parsed) -> str:
    """The report's key: a sha256 per ``Report.key`` access, so made once, where it was parsed."""
    assert p.item is not None and p.item.report is not None
    if p.key is None:
        p.key = p.item.report.key
    return p.key


def _env_int(name: str, default: int) -> int:
    """Items per transaction from the environment: smaller batches hold the DuckDB
    lock for less time (and give the fault tests more commit points)."""
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def _recount(summary: RunSummary) -> RunSummary:
    fresh = RunSummary(run_id=summary.run_id, seconds=summary.seconds)
    for item in summary.items:
        fresh.add(item)
    return fresh


def _label(raw: RawItem) -> str:
    return f"{raw.origin} [{raw.member}]" if raw.member else raw.origin


def ingest_paths(
    paths: Iterable[str | Path],
    db_path: Path,
    *,
    command: str = "ingest",
    lock_timeout: float = 30.0,
    progress: ProgressFn | None = None,
    workers: int = 1,
    after_commit: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
) -> RunSummary:
    """Library entry point behind ``dmarclens ingest`` (``workers``: parsing processes, 0 = per core;
    ``after_commit``: see ``Ingestor.after_commit``)."""
    from dmarclens.sources.files import iter_path_tasks

    ingestor = Ingestor(db_path=Path(db_path), command=command, lock_timeout=lock_timeout, progress=progress,
                        workers=workers, after_commit=after_commit)
    return ingestor.run(iter_path_tasks([str(p) for p in paths]))
