"""`dmarclens fetch`: drain IMAP report folders into the database, exactly once.

Per batch of messages the order never changes: FETCH → parse → store and
COMMIT → only then MOVE each message to the archive folder (its reports are
stored or were already there) or the invalid folder (something in it could
not be used; the reason is in ``ingest_items``). So:

* a crash before the commit leaves the mail in the folder: the next run
  simply does it again;
* a crash after the commit and before the move leaves mail whose reports are
  stored: the next run parses it again, the store recognises every report as
  a duplicate (same reporter, id, domain, interval), nothing is counted
  twice, and the message is moved;
* a dropped connection between commit and move is healed within the run: the
  committed UIDs are remembered and moved after the reconnect, unless the
  folder's UIDVALIDITY changed meanwhile (then the UIDs mean nothing and the
  messages are simply seen again as duplicates).

Nothing here depends on UIDs surviving between runs: processed mail leaves
the folder, so a one-shot run reads whatever is in it. Watch mode (IDLE) only
asks the server for UIDs above the last one it saw, so a wake-up costs one
UID SEARCH, not a re-scan of the folder.

Runs are serialised per database and mailbox with an ``fcntl`` lock file next
to the database (released by the kernel even on SIGKILL); a second run finds
it taken, says so and exits 0.

Fault injection for tests: ``DMARCLENS_FAILPOINT=point[:n]:action`` (several
separated by commas) makes the n-th pass (default 1st) through ``point``
(``before_fetch``, ``after_fetch``, ``after_commit``, ``after_move``) do
``kill`` (SIGKILL itself), ``stop`` (SIGSTOP itself, for a test to act and
SIGCONT it) or ``exit`` (exit code 99 without cleanup).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from dmarclens.core.errors import ConfigError, DmarcLensError, LockedError, StoreError
from dmarclens.core.models import ItemResult, RawItem, RunSummary
from dmarclens.core.net import is_loopback
from dmarclens.ingest.parsed import Parsed
from dmarclens.ingest.pool import parse_apart
from dmarclens.ingest.writer import Ingestor, ProgressFn
from dmarclens.sources.files import items_from_mail
from dmarclens.sources.imap.client import ImapConnection, ImapDisconnected, ImapError
from dmarclens.sources.imap.settings import Credentials, ImapSettings, resolve_credentials

log = logging.getLogger(__name__)

MAX_FETCH_BYTES = 64 * 1024 * 1024  # one FETCH never asks for more than this (unless one message is bigger)

ProgressHook = Callable[["MailboxStats"], None]


# ---------------------------------------------------------------------- results


@dataclass
class MailboxStats:
    """What happened to one mailbox's messages in this run (or watch session)."""

    label: str
    found: int = 0  # messages the searches returned
    processed: int = 0  # messages whose reports were committed (or classified, in a dry run)
    archived: int = 0
    invalid: int = 0
    left: int = 0  # found but not processed: stop requested, or dry run (nothing moves)
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    ignored: int = 0
    uidvalidity: int | None = None
    locked: bool = False  # another run held the lock; nothing done
    error: str | None = None

    def count(self, results: Sequence[ItemResult]) -> None:
        for r in results:
            if r.outcome == "stored":
                self.stored += 1
            elif r.outcome == "duplicate":
                self.duplicates += 1
            elif r.outcome == "rejected":
                self.rejected += 1
            else:
                self.ignored += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.label,
            "messages": self.processed,
            "archived": self.archived,
            "invalid": self.invalid,
            "left": self.left,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "ignored": self.ignored,
            "uidvalidity": self.uidvalidity,
            "locked": self.locked,
            "error": self.error,
        }


@dataclass
class FetchResult:
    """The outcome of a whole `dmarclens fetch` (all mailboxes)."""

    summary: RunSummary
    mailboxes: list[MailboxStats]
    dry_run: bool = False
    watched: bool = False

    @property
    def exit_code(self) -> int:
        """0 ok, 3 some messages rejected (one-shot only), 1 a mailbox could not be drained.

        A watch stopped by SIGTERM/SIGINT exits 0 even if it met junk on the
        way: for a service manager, a clean stop is not a failure, and the
        rejects are in ingest_items and the invalid folder.
        """
        if any(m.error for m in self.mailboxes):
            return 1
        if self.watched:
            return 0
        return 3 if any(m.rejected for m in self.mailboxes) or self.summary.rejected else 0

    def to_json(self) -> dict[str, Any]:
        out = self.summary.to_json()
        out["dry_run"] = self.dry_run
        out["mailboxes"] = [m.to_json() for m in self.mailboxes]
        return out


# ---------------------------------------------------------------------- lock


class MailboxLock:
    """An exclusive ``fcntl`` lock per (database, mailbox), held for the whole run.

    Why a lock file and not a DuckDB row: the database is opened only for
    short writes, and a crashed run must never leave a stale lock behind; the
    kernel drops an ``flock`` when its process dies, whatever the cause.
    """

    def __init__(self, db_path: Path, settings: ImapSettings) -> None:
        key = f"{settings.user}@{settings.host}:{settings.effective_port}/{settings.folder}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        db_path = Path(db_path)
        self.path = db_path.parent / f".{db_path.name}.fetch-{digest}.lock"
        self.label = settings.label
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"cannot create lock file {self.path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise StoreError(f"cannot lock {self.path}: {e.strerror}") from e
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}: {self.label}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds the lock, as its file says (best effort)."""
        try:
            return self.path.read_text(encoding="utf-8").strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ---------------------------------------------------------------------- failpoints


class Failpoints:
    """Deterministic fault injection for the exactly-once tests (see module docstring)."""

    POINTS = ("before_fetch", "after_fetch", "after_commit", "after_move")

    def __init__(self, spec: str | None) -> None:
        self._rules: dict[str, tuple[int, str]] = {}
        self._hits: dict[str, int] = {}
        self._lock = threading.Lock()
        for part in (spec or "").split(","):
            bits = [b.strip() for b in part.strip().split(":") if b.strip()]
            if not bits:
                continue
            if len(bits) == 2:
                bits.insert(1, "1")
            if len(bits) != 3 or bits[0] not in self.POINTS or bits[2] not in ("kill", "stop", "exit"):
                raise DmarcLensError(f"DMARCLENS_FAILPOINT: cannot read {part!r}")
            self._rules[bits[0]] = (int(bits[1]), bits[2])

    def hit(self, point: str) -> None:
        if point not in self._rules:
            return
        with self._lock:
            self._hits[point] = self._hits.get(point, 0) + 1
            nth, action = self._rules[point]
            if self._hits[point] != nth:
                return
        log.warning("failpoint %s reached (pass %d): %s", point, nth, action)
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            os._exit(99)


# ---------------------------------------------------------------------- sinks


class Sink(Protocol):
    """Where parsed items go: the real Ingestor, or a dry run that only classifies."""

    summary: RunSummary

    def add(self, parsed: Parsed) -> None: ...

    def flush(self, *, finished: bool = False) -> list[ItemResult]: ...


@dataclass
class DryRunSink:
    """Classifies items the way the store would (stored / duplicate / rejected / ignored), writing nothing.

    Duplicates are looked up read-only in the database when it exists, so a
    dry run tells the truth about what a real run would add.
    """

    db_path: Path
    lock_timeout: float = 30.0
    progress: ProgressFn | None = None
    summary: RunSummary = field(default_factory=lambda: RunSummary(run_id="dry-run"))
    _pending: list[Parsed] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def add(self, parsed: Parsed) -> None:
        self._pending.append(parsed)

    def flush(self, *, finished: bool = False) -> list[ItemResult]:
        from dmarclens.ingest.parsed import base_result

        pending, self._pending = self._pending, []
        keys = [p.item.report.key for p in pending if p.item and p.item.report]
        known = self._known(keys)
        results = []
        for p in pending:
            res = base_result(p.raw)
            if p.error is not None:
                res.reason = p.error
            elif p.item is not None and p.item.report is None:
                res.outcome, res.kind = "ignored", p.item.kind
                res.reason = f"{p.item.summary or p.item.kind}: recorded, not aggregate data"
            elif p.item is not None and p.item.report is not None:
                report = p.item.report
                res.kind, res.report_key, res.domain = "aggregate", report.key, report.domain
                if report.key in known or report.key in self._seen:
                    res.outcome, res.reason = "duplicate", "same report already stored"
                else:
                    self._seen.add(report.key)
                    res.outcome = "stored"
                    res.records, res.messages = len(report.records), report.records.messages
            results.append(res)
            self.summary.add(res)
            if self.progress:
                self.progress(res)
        return results

    def _known(self, keys: list[str]) -> set[str]:
        if not keys or not Path(self.db_path).exists():
            return set()
        from dmarclens.store import db as dbmod
        from dmarclens.store import write

        with dbmod.open_db(self.db_path, read_only=True, lock_timeout=self.lock_timeout) as con:
            return set(write.existing_keys(con, keys))


@dataclass
class _Prepared:
    """A fetched and parsed batch: what ``_complete`` needs to store and move it."""

    handled: list[int]  # UIDs whose items are in ``parsed``, in order
    origins: dict[int, str]  # UID -> origin string of its items
    parsed: list[Parsed]
    skipped: int  # present but left in the folder (stop requested)


# ---------------------------------------------------------------------- one mailbox


@dataclass
class FetchOptions:
    """Run-wide choices shared by every mailbox."""

    db_path: Path
    dry_run: bool = False
    lock_timeout: float = 30.0
    password_file: Path | None = None  # --password-file: beats every other password source
    stop: threading.Event = field(default_factory=threading.Event)
    on_batch: ProgressHook | None = None
    failpoints: Failpoints = field(default_factory=lambda: Failpoints(os.environ.get("DMARCLENS_FAILPOINT")))
    store_lock: threading.Lock = field(default_factory=threading.Lock)
    after_commit: Callable[[Any], None] | None = None  # Ingestor.after_commit: the CLI classifies traffic there


class MailboxRunner:
    """Drains one folder: select, search, batch, store, move; reconnects when the connection drops."""

    def __init__(self, settings: ImapSettings, options: FetchOptions,
                 credentials: Callable[[], Credentials] | None = None) -> None:
        self.s = settings
        self.o = options
        self.stats = MailboxStats(label=settings.label)
        self.conn = ImapConnection(settings, credentials or self._credentials)
        self.archive_name = ""
        self.invalid_name = ""
        self.uidvalidity: int | None = None
        self.last_uid = 0  # highest UID the searches returned on this connection's folder
        self.pending: dict[int, str] = {}  # committed but not yet moved: UID -> destination folder
        self._collected: dict[str, list[ItemResult]] = {}
        self._warned_insecure = False

    def _credentials(self) -> Credentials:
        return resolve_credentials(self.s, cli_password_file=self.o.password_file)

    @property
    def stop(self) -> threading.Event:
        return self.o.stop

    # ------------------------------------------------------------------ session
    def open(self) -> None:
        """Connect, make sure the destination folders exist, select the folder, finish pending moves."""
        s = self.s
        if s.insecure and not self._warned_insecure:
            log.warning(
                "WARNING: --insecure: the certificate of %s is NOT checked; anyone on the network path "
                "can impersonate the server and read the password and every report", s.host,
            )
            self._warned_insecure = True
        if s.tls == "none" and not is_loopback(s.host) and not self._warned_insecure:
            log.warning("WARNING: --tls none: the password for %s crosses the network in clear text", s.label)
            self._warned_insecure = True
        self.conn.connect()
        if not self.conn.folder_exists(s.folder):
            self.conn.select(s.folder, readonly=True)  # raises the "does not exist (folders: ...)" error
        if self.o.dry_run:
            for folder in (s.archive_folder, s.invalid_folder):
                if not self.conn.folder_exists(folder):
                    log.info("%s: folder %r does not exist; a real run would create it", s.label, folder)
            self.archive_name = self.conn.server_name(s.archive_folder)
            self.invalid_name = self.conn.server_name(s.invalid_folder)
        else:
            self.archive_name = self.conn.ensure_folder(s.archive_folder)
            self.invalid_name = self.conn.ensure_folder(s.invalid_folder)
        state = self.conn.select(s.folder, readonly=self.o.dry_run)
        if self.uidvalidity is not None and state.uidvalidity != self.uidvalidity:
            log.warning(
                "%s: UIDVALIDITY changed (%d -> %d): the server renumbered the folder; rescanning it "
                "(reports already stored will be recognised as duplicates)",
                s.label, self.uidvalidity, state.uidvalidity,
            )
            self.pending.clear()
            self.last_uid = 0
        self.uidvalidity = state.uidvalidity
        self.stats.uidvalidity = state.uidvalidity
        if self.pending:
            self._move_pending()

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ draining
    def drain(self, sink_for: Callable[[], Sink], *, full: bool) -> int:
        """Process every message the folder holds (``full``) or that arrived after the last one seen.

        Keeps searching until a search brings nothing new, so mail arriving
        during a long run is taken too and a one-shot run ends drained.
        Each batch is fetched, parsed, committed and moved before the next is
        fetched. Returns the number of messages processed.
        """
        done = 0
        min_uid = 1 if full else self.last_uid + 1
        while not self.stop.is_set():
            uids = self.conn.search(since=self.s.since, min_uid=min_uid)
            uids = [u for u in uids if u not in self.pending]
            if not uids:
                break
            self.last_uid = max(self.last_uid, uids[-1])
            min_uid = uids[-1] + 1
            self.stats.found += len(uids)
            for start in range(0, len(uids), self.s.batch_size):
                if self.stop.is_set():
                    self.stats.left += len(uids) - start
                    break
                prepared = self._prepare(uids[start:start + self.s.batch_size])
                done += self._complete(sink_for(), prepared)
        return done

    def _prepare(self, uids: list[int]) -> _Prepared:
        """Fetch one batch (never more than MAX_FETCH_BYTES per FETCH) and parse it."""
        fp = self.o.failpoints
        fp.hit("before_fetch")
        sizes = self.conn.sizes(uids)
        present = [u for u in uids if u in sizes]  # others were expunged by someone else meanwhile
        limit = self.s.max_message_bytes
        too_big = [u for u in present if sizes[u] > limit]
        handled: list[int] = []
        origins: dict[int, str] = {}
        raws: list[RawItem] = []
        big_ids = self.conn.message_ids(too_big) if too_big else {}
        for uid in too_big:
            origins[uid] = self._origin(uid)
            raws.append(RawItem(
                data=b"", origin=origins[uid], origin_kind="imap", mailbox=self._folder,
                uidvalidity=self.uidvalidity, uid=uid, message_id=big_ids.get(uid),
                problem=f"message is {sizes[uid] / 1024 / 1024:.1f} MB, over the {self.s.max_message_mb:g} MB "
                        "limit (max_message_mb); not downloaded",
            ))
            handled.append(uid)
        for group in _byte_groups([u for u in present if sizes[u] <= limit], sizes, MAX_FETCH_BYTES):
            if self.stop.is_set():
                break
            bodies = self.conn.fetch(group)
            fp.hit("after_fetch")
            for uid in group:
                if self.stop.is_set():
                    break  # the message in hand is finished; the rest stays in the folder
                data = bodies.pop(uid, None)
                if data is None:
                    continue  # expunged between SIZE and FETCH
                origins[uid] = self._origin(uid)
                raws.extend(items_from_mail(
                    data, origin=origins[uid], origin_kind="imap", mailbox_name=self._folder,
                    uidvalidity=self.uidvalidity, uid=uid, inflate_dir=self._spill_dir,
                ))
                handled.append(uid)
                del data
            del bodies
        # A big report is parsed apart, its XML and rows kept out of this
        # process's memory, as ``dmarclens ingest`` does (docs/scale.md).
        parsed = list(parse_apart(raws, spill_dir=self._spill_dir))
        return _Prepared(handled=handled, origins=origins, parsed=parsed, skipped=len(present) - len(handled))

    def _complete(self, sink: Sink, prep: _Prepared) -> int:
        """Store one prepared batch in one commit, then move each message. Returns messages processed."""
        self._collected = {}
        with self.o.store_lock:
            for item in prep.parsed:
                sink.add(item)
            prep.parsed.clear()
            sink.flush()
        self.o.failpoints.hit("after_commit")
        self.stats.left += prep.skipped
        self._route(prep.handled, prep.origins)
        if self.o.on_batch:
            self.o.on_batch(self.stats)
        return len(prep.handled)

    @property
    def _spill_dir(self) -> str:
        """Big reports are inflated and spilled next to the database (docs/scale.md)."""
        return str(Path(self.o.db_path).resolve().parent)

    @property
    def _folder(self) -> str:
        """The server's name of the folder being drained (as recorded in ingest_items.mailbox)."""
        return self.conn.selected.name if self.conn.selected else self.s.folder

    def _collect(self, result: ItemResult) -> None:
        """Progress hook of the sink: results arrive here only after their commit."""
        self._collected.setdefault(result.origin, []).append(result)

    def _route(self, handled: list[int], origins: dict[int, str]) -> None:
        """Move each committed message to the archive or the invalid folder."""
        moves: dict[int, str] = {}
        for uid in handled:
            results = self._collected.pop(origins[uid], [])
            self.stats.count(results)
            if not results:
                log.error("%s: UID %d produced no ledger entry; leaving it in the folder", self.s.label, uid)
                continue
            # The pipeline has already logged each rejected item with its reason.
            rejected = any(r.outcome == "rejected" for r in results)
            moves[uid] = self.invalid_name if rejected else self.archive_name
        self.stats.processed += len(moves)
        if self.o.dry_run:
            self.stats.archived += sum(1 for d in moves.values() if d == self.archive_name)
            self.stats.invalid += sum(1 for d in moves.values() if d == self.invalid_name)
            self.stats.left += len(moves)
            return
        self.pending.update(moves)
        self._move_pending()
        self.o.failpoints.hit("after_move")

    def _move_pending(self) -> None:
        by_dest: dict[str, list[int]] = {}
        for uid, dest in self.pending.items():
            by_dest.setdefault(dest, []).append(uid)
        for dest, uids in by_dest.items():
            uids.sort()
            self.conn.move(uids, dest, mark_seen=dest == self.archive_name)
            for uid in uids:
                self.pending.pop(uid, None)
            if dest == self.archive_name:
                self.stats.archived += len(uids)
            else:
                self.stats.invalid += len(uids)

    def _origin(self, uid: int) -> str:
        """RFC 5092 style IMAP URL of one message: what a person needs to find it again."""
        s = self.s
        default = 993 if s.tls == "implicit" else 143
        port = f":{s.effective_port}" if s.effective_port != default else ""
        return (f"imap://{quote(s.user, safe='')}@{s.host}{port}/{quote(self._folder, safe='/')}"
                f";UIDVALIDITY={self.uidvalidity}/;UID={uid}")

    # ------------------------------------------------------------------ modes
    def run_once(self, sink_for: Callable[[], Sink]) -> None:
        """Drain the folder once; reconnect up to ``retries`` times if the connection drops."""
        attempt = 0
        connected_once = False
        while True:
            try:
                self.open()
                connected_once = True
                self.drain(sink_for, full=True)
                return
            except ImapError as e:
                if not (connected_once and e.retryable) or attempt >= self.s.retries or self.stop.is_set():
                    if self.pending:
                        raise type(e)(
                            f"{e}; {len(self.pending)} message(s) are stored but not moved yet: "
                            "the next run recognises them as duplicates and moves them"
                        ) from None
                    raise
                attempt += 1
                delay = min(self.s.max_backoff, 2.0 ** (attempt - 1))
                log.warning("%s; reconnecting in %.0fs (attempt %d of %d)", e, delay, attempt, self.s.retries)
                self.conn.close()
                if self.stop.wait(delay):
                    return

    def watch(self, new_sink: Callable[[], Sink], finish: Callable[[Sink], None]) -> None:
        """IDLE on the folder until stopped; reconnect with capped exponential backoff forever.

        Each wake-up gets its own ingest run (``new_sink``/``finish``) so a
        watch that lasts months keeps no growing list of results in memory.
        """
        attempt = 0
        started = False
        while not self.stop.is_set():
            try:
                self.open()
                if attempt:
                    log.warning("%s: reconnected after %d attempt(s)", self.s.label, attempt)
                attempt = 0
                started = True
                self._cycle(new_sink, finish, full=True)
                while not self.stop.is_set():
                    if self.conn.can_idle:
                        self.conn.wait_for_mail(self.s.idle_renew, self.stop.is_set)
                    else:
                        self.stop.wait(self.s.poll_interval)
                    if self.stop.is_set():
                        break
                    # News or a plain IDLE renewal: either way ask only for UIDs above
                    # the last seen, one cheap SEARCH that also catches a missed notification.
                    self._cycle(new_sink, finish, full=False)
            except (ImapError, LockedError, ConfigError) as e:
                # After a good start everything is retried: a password changed on the server, a
                # token endpoint down for a minute, a dashboard holding the database a while.
                retryable = isinstance(e, LockedError) or (isinstance(e, ImapError) and e.retryable)
                if not started and not retryable:
                    raise
                attempt += 1
                delay = min(self.s.max_backoff, 2.0 ** (attempt - 1))
                log.warning("%s; reconnecting in %.0fs (attempt %d)", e, delay, attempt)
                self.conn.close()
                self.stop.wait(delay)
        self.close()

    def _cycle(self, new_sink: Callable[[], Sink], finish: Callable[[Sink], None], *, full: bool) -> None:
        sink: Sink | None = None

        def sink_for() -> Sink:
            nonlocal sink
            if sink is None:
                sink = new_sink()
            return sink

        before = (self.stats.processed, self.stats.archived, self.stats.invalid,
                  self.stats.stored, self.stats.duplicates, self.stats.rejected)
        store_failed = False
        try:
            self.drain(sink_for, full=full)
        except StoreError:
            store_failed = True  # closing the run would only wait for the same lock/disk again
            raise
        finally:
            if sink is not None and not store_failed:
                with self.o.store_lock:
                    try:
                        finish(sink)
                    except DmarcLensError as e:
                        log.warning("%s: could not mark the ingest run finished: %s", self.s.label, e)
        if sink is not None and self.stats.processed > before[0]:
            log.info(
                "%s: %d message(s): %d report(s) stored, %d duplicate(s), %d rejected; %d archived, %d invalid",
                self.s.label, self.stats.processed - before[0], self.stats.stored - before[3],
                self.stats.duplicates - before[4], self.stats.rejected - before[5],
                self.stats.archived - before[1], self.stats.invalid - before[2],
            )


def _byte_groups(uids: list[int], sizes: dict[int, int], limit: int) -> Iterator[list[int]]:
    """Split UIDs so one FETCH never pulls more than ``limit`` bytes (one big message goes alone)."""
    group: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if group and total + size > limit:
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group


# ---------------------------------------------------------------------- entry points


def _new_ingestor(options: FetchOptions, collect: ProgressFn) -> Ingestor:
    return Ingestor(db_path=Path(options.db_path), command="fetch", source_kind="imap",
                    lock_timeout=options.lock_timeout, progress=collect,
                    summary=RunSummary(run_id=uuid.uuid4().hex[:16]), after_commit=options.after_commit)


def fetch_once(mailboxes: Sequence[ImapSettings], options: FetchOptions) -> FetchResult:
    """Drain every mailbox once (cron / systemd timer) and return what happened.

    Every mailbox is tried even when an earlier one failed; the failure is
    recorded on its MailboxStats and makes the exit code 1.
    """
    sink: Sink | None = None
    runners: list[MailboxRunner] = []
    current: list[MailboxRunner] = []
    store_failed = False

    def collect(result: ItemResult) -> None:
        current[0]._collect(result)

    def sink_for() -> Sink:
        nonlocal sink
        if sink is None:
            if options.dry_run:
                sink = DryRunSink(db_path=Path(options.db_path), lock_timeout=options.lock_timeout, progress=collect)
            else:
                sink = _new_ingestor(options, collect)
        return sink

    for settings in mailboxes:
        if options.stop.is_set():
            break
        runner = MailboxRunner(settings, options)
        runners.append(runner)
        current[:] = [runner]
        store_failed = _drain_one(runner, options, sink_for) or store_failed
    summary = RunSummary(run_id="none")
    if sink is not None:
        if isinstance(sink, Ingestor) and not store_failed:
            try:
                summary = sink.finish()
            except DmarcLensError as e:
                runners[-1].stats.error = runners[-1].stats.error or str(e)
                summary = sink.summary
        else:
            summary = sink.summary
    return FetchResult(summary=summary, mailboxes=[r.stats for r in runners], dry_run=options.dry_run)


def _drain_one(runner: MailboxRunner, options: FetchOptions, sink_for: Callable[[], Sink]) -> bool:
    """One mailbox of a one-shot run, under its lock; True when the database failed."""
    settings = runner.s
    lock = MailboxLock(options.db_path, settings) if not options.dry_run else None
    if lock is not None and not lock.acquire():
        runner.stats.locked = True
        log.warning(
            "%s: another dmarclens fetch is already working on this mailbox and database (%s); "
            "skipping it this time", settings.label, lock.holder(),
        )
        return False
    try:
        runner.run_once(sink_for)
    except ConfigError:
        raise  # no password, bad command ...: a usage problem for every mailbox alike
    except ImapError as e:
        runner.stats.error = str(e)
    except DmarcLensError as e:
        runner.stats.error = f"{settings.label}: {e}"
        return isinstance(e, StoreError)
    finally:
        runner.close()
        if lock is not None:
            lock.release()
    return False


def watch(mailboxes: Sequence[ImapSettings], options: FetchOptions) -> FetchResult:
    """Watch every mailbox with IDLE until ``options.stop`` is set (SIGTERM/SIGINT in the CLI).

    One thread per mailbox (IDLE holds a connection each); database writes
    are serialised by ``options.store_lock``. Start-up problems that retrying
    cannot fix (login, certificate, missing folder) end the watch with an
    error; everything after a good start is retried with backoff.
    """
    if options.dry_run:
        raise DmarcLensError("--dry-run cannot be combined with --watch")
    totals = RunSummary(run_id="watch")
    runners: list[MailboxRunner] = []
    locks: list[MailboxLock] = []
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def serve(runner: MailboxRunner) -> None:
        def new_sink() -> Sink:
            return _new_ingestor(options, runner._collect)

        def finish(sink: Sink) -> None:
            done = sink.finish() if isinstance(sink, Ingestor) else sink.summary
            for name in ("stored", "duplicates", "rejected", "ignored", "records", "messages"):
                setattr(totals, name, getattr(totals, name) + getattr(done, name))

        try:
            runner.watch(new_sink, finish)
        except DmarcLensError as e:
            if isinstance(e, ConfigError) and len(mailboxes) == 1:
                raise  # usage problem: exit 2 like every command
            runner.stats.error = str(e)
            errors.append(e)
            if len(mailboxes) > 1:
                log.error("%s", e)  # the others keep running; say it now
        except BaseException as e:  # a bug in one watcher must not leave the others running forever
            runner.stats.error = f"internal error: {e!r}"
            errors.append(e)
            options.stop.set()
            raise
        finally:
            runner.close()

    try:
        for settings in mailboxes:
            runner = MailboxRunner(settings, options)
            runners.append(runner)
            lock = MailboxLock(options.db_path, settings)
            if not lock.acquire():
                runner.stats.locked = True
                log.warning("%s: another dmarclens fetch is already working on this mailbox and database (%s); "
                            "not watching it", settings.label, lock.holder())
                continue
            locks.append(lock)
            if len(mailboxes) == 1:
                serve(runner)
            else:
                t = threading.Thread(target=serve, args=(runner,), name=f"watch {settings.label}", daemon=True)
                t.start()
                threads.append(t)
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)
    finally:
        options.stop.set()
        for t in threads:
            t.join(timeout=30)
        for lock in locks:
            lock.release()
    return FetchResult(summary=totals, mailboxes=[r.stats for r in runners], watched=True)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop``: the message in hand is finished, then the run ends with exit 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        if not stop.is_set():
            log.warning("%s received: finishing the message in hand, then stopping",
                        signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_fetch(mailboxes: Sequence[ImapSettings], options: FetchOptions, *, watch_mode: bool = False) -> FetchResult:
    """Library entry point behind `dmarclens fetch` (signals handled when called on the main thread)."""
    with stop_on_signals(options.stop):
        start = time.monotonic()
        result = watch(mailboxes, options) if watch_mode else fetch_once(mailboxes, options)
        result.summary.seconds = time.monotonic() - start
        return result


__all__ = [
    "DryRunSink",
    "FetchOptions",
    "FetchResult",
    "Failpoints",
    "ImapDisconnected",
    "MailboxLock",
    "MailboxRunner",
    "MailboxStats",
    "fetch_once",
    "run_fetch",
    "stop_on_signals",
    "watch",
]
