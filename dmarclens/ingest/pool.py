"""Parse with a pool of worker processes, store with one writer.

Why processes: parsing is pure Python work on bytes (``ingest.parsed.parse_raw``
is pure and its inputs and outputs pickle), so on a 2-core machine a second
process nearly doubles parse throughput, while DuckDB allows one writer per
file anyway: the ``Ingestor`` in the parent stays the only writer.

Order is kept: results come back in input order, so duplicate detection
("the first copy wins") and batch boundaries are exactly those of a
one-process run, and the database ends up the same.

Memory stays bounded: at most ``window`` chunks of items are in flight, so a
mailbox of 100,000 reports is never read into memory ahead of the workers.
Small inputs do not pay the pool's start-up: below ``POOL_MIN_ITEMS`` items
everything is parsed in-process.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from typing import TYPE_CHECKING, Any

from dmarclens.core import bigfile

if TYPE_CHECKING:
    from dmarclens.core.models import RawItem
    from dmarclens.ingest.parsed import Parsed
    from dmarclens.sources.files import FileTask

log = logging.getLogger(__name__)

POOL_MIN_ITEMS = 64
"""Fewer items than this are parsed in-process: forking workers costs more
than parsing a few dozen small reports."""

POOL_BATCH_ITEMS = 2000
"""Items per transaction when a pool parses (unless DMARCLENS_BATCH_ITEMS says
otherwise): fewer, larger transactions keep the one writer ahead of the workers."""

CHUNK_ITEMS = 32
"""Items sent to a worker per task: enough to amortise the round trip and
the Arrow batch each chunk's rows become (32 measured ~5 % less CPU than 16
on 10,000 small reports), few enough that one big report does not hold back
the rest."""


def resolve_workers(workers: int | None) -> int:
    """``0`` or ``None`` means one worker per available core."""
    if workers is None or workers <= 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    return workers


BIG_ITEM_BYTES = 4 * 1024 * 1024
"""Items at least this large (as received) are parsed in a child process of
their own when more than one worker is allowed."""


def parse_all(raws: Iterable[RawItem | FileTask], *, workers: int | None = 1, ahead: int = 0,
              on_wait: Callable[[], None] | None = None,
              before_fork: Callable[[], None] | None = None, spill_dir: str | None = None) -> Iterator[Parsed]:
    """Every item parsed, in input order, by ``workers`` processes.

    ``workers=1`` keeps everything in the calling process (a big report is not
    split either). Otherwise a long input goes to a pool, and a big item in a
    short input is parsed by a forked child, which splits the report across
    the cores and looks up its IPs; the writer then holds only the compact
    result, never the parser's working memory or the IP database.

    ``ahead``: how many items the pool may parse ahead of the consumer (at
    least a few chunks per worker, at most ``AHEAD_BYTES`` of input). The
    writer passes its batch size, so the workers keep parsing the next batch
    while it writes and commits the current one instead of idling.
    ``on_wait`` is called while a big item is parsed in a child process, to
    use that wait (the writer opens the database then); ``before_fork`` just
    before any process is forked (the writer closes a database it kept open:
    a child must not inherit DuckDB's threads half-way through their work).
    ``spill_dir``: where a big report's record batches are written while it is
    parsed and stored (``dmarclens.core.spill``; the system's temporary directory
    if None), so neither process holds them all.
    """
    from dmarclens.ingest.parsed import parse_raw
    from dmarclens.parse.fast import set_split_processes, split_processes
    from dmarclens.sources.files import expand

    n = resolve_workers(workers)
    items = iter(raws)
    if n <= 1:
        before = split_processes()
        set_split_processes(1)
        try:
            yield from map(parse_raw, (raw for item in items for raw in expand(item)))
        finally:
            set_split_processes(before)
        return
    head = list(islice(items, POOL_MIN_ITEMS))
    if len(head) < POOL_MIN_ITEMS:
        # A big bare report comes mapped, not read: the child that parses it
        # reads it a window at a time and this process never holds its bytes.
        few = [raw for item in head for raw in expand(item, map_big=True, inflate_dir=spill_dir)]
        few.reverse()
        while few:
            raw = few.pop()
            if is_big(raw):
                if before_fork is not None:
                    before_fork()
                parsed = _isolated(raw, on_wait, spill_dir)
            else:
                parsed = parse_raw(raw)
            del raw  # the writer may flush while we are suspended here: do not pin 100 MB of XML
            yield parsed
        return
    if before_fork is not None:
        before_fork()
    yield from _pooled(_open_big_files(chain(head, items)), n, ahead)


def is_big(raw: RawItem) -> bool:
    """Parsed apart in a forked child: mapped, or big once inflated (a 130 MB
    report may arrive as 4 MB of gzip)."""
    return bigfile.is_mapped(raw.data) or bigfile.expanded_size(raw.data) >= BIG_ITEM_BYTES


def parse_apart(raws: Iterable[RawItem], *, spill_dir: str | None = None) -> Iterator[Parsed]:
    """``parse_raw`` for each item, except that a big one is parsed in a forked
    child as ``parse_all`` does (``dmarclens fetch``: a huge report arriving by
    mail must not cost the fetch process its size in memory either).

    Only while this process runs no other Python thread: a fork copies the
    memory of every thread but runs only one, so a lock another thread held
    mid-allocation (watch mode serves mailboxes on threads) would stay held
    in the child for ever. Then big items are parsed in-process, as before.
    """
    from dmarclens.ingest.parsed import parse_raw

    forkable = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    for raw in raws:
        yield _isolated(raw, spill_dir=spill_dir) if forkable and is_big(raw) else parse_raw(raw)


FACTS_SPLIT_MIN = 20_000
"""From this many IPs on, a big report's lookups are shared with a helper process."""


def _facts(ips: list[str]) -> Any:
    """Facts for ``ips``, looked up in slices (50,000 fact objects at once
    would be the process's memory peak)."""
    from dmarclens.core.arrow import import_pyarrow
    from dmarclens.enrich.offline import shared_enricher
    from dmarclens.store import write

    enricher = shared_enricher()
    tables = [write.ip_facts_table(ips[i: i + write.IP_SLICE], enricher) for i in range(0, len(ips), write.IP_SLICE)]
    if not tables:
        return write.ip_facts_table([], enricher)
    return tables[0] if len(tables) == 1 else import_pyarrow().concat_tables(tables)


def _facts_helper(ips: list[str], sender: Any) -> None:
    from dmarclens.core.pipes import send_pickled

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    send_pickled(sender, _facts(ips))
    sender.close()


def _isolated(raw: RawItem, on_wait: Callable[[], None] | None = None, spill_dir: str | None = None) -> Parsed:
    """Parse one big item in a forked child and take back only its result."""
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:
        from dmarclens.ingest.parsed import parse_raw

        return parse_raw(raw)
    _sweep_spill_dirs(spill_dir or tempfile.gettempdir())
    try:
        spill = tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=spill_dir)
    except OSError as e:  # an unwritable directory: the batches stay in memory
        log.debug("no spill directory in %s: %s", spill_dir, e)
        spill = None
    try:
        return _isolated_in(ctx, raw, on_wait, spill)
    finally:
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)


SPILL_PREFIX = ".dmarclens-spill-"
"""Spill directories are named ``.dmarclens-spill-<writer pid>-<random>``."""


def _sweep_spill_dirs(directory: str) -> None:
    """Remove spill directories whose writer is gone (it was killed before
    it could remove its own): they hold nothing anyone can still use."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(SPILL_PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(SPILL_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or another process reusing the number): leave it
        except ProcessLookupError:
            pass
        except OSError:
            continue  # exists but not ours to signal
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _isolated_in(ctx: Any, raw: RawItem, on_wait: Callable[[], None] | None, spill: str | None) -> Parsed:
    from dmarclens.core.arrow import import_pyarrow
    from dmarclens.core.pipes import receive_pickled
    from dmarclens.core.records import ColumnarRecords
    from dmarclens.core.spill import SpilledBatches
    from dmarclens.ingest.parsed import parse_raw

    receiver, sender = ctx.Pipe(duplex=False)
    box = [raw]  # the child pops it, so its copy of the bytes dies with the parse
    proc = ctx.Process(target=_isolated_child, args=(box, sender, spill))  # not daemonic: it forks parts
    proc.start()
    sender.close()
    if on_wait is not None:
        try:
            # Its result is Arrow data: load pyarrow now, while the child
            # parses, not after it has sent the result.
            import_pyarrow()
            on_wait()
        except BaseException:
            proc.kill()
            proc.join()
            receiver.close()
            raise
    try:
        result = receive_pickled(receiver)
    except (EOFError, OSError, pickle.UnpicklingError):
        result = None
    finally:
        receiver.close()
        proc.join()
    if result is None:
        log.warning("%s: the parsing process died (exit %s); parsing in-process", raw.origin, proc.exitcode)
        path = raw.data.path if isinstance(raw.data, bigfile.FileMap) else None
        if path is not None:
            # It may have died reading the map (a file truncated under it
            # raises SIGBUS): this process reads the file instead. A map of
            # an unnamed temporary file (an inflated zip member) cannot
            # change under anyone and is parsed as it is.
            raw = _reread(raw, path)
        return parse_raw(raw)
    records = result.item.report.records if result.item is not None and result.item.report is not None else None
    if isinstance(records, ColumnarRecords) and isinstance(records.batches, SpilledBatches):
        records.batches.adopt()  # before the spill directory goes
    return result


def _reread(raw: RawItem, path: str) -> RawItem:
    from dmarclens.core.payload import MAX_REPORT_BYTES

    try:
        return dataclasses.replace(raw, data=bigfile.reread(path, MAX_REPORT_BYTES))
    except OSError as e:
        return dataclasses.replace(raw, data=b"", problem=f"cannot read: {e.strerror}")
    except ValueError as e:
        return dataclasses.replace(raw, data=b"", problem=str(e))


def _isolated_child(box: list[RawItem], sender: Any, spill: str | None = None) -> None:
    """Parse with both cores busy from start to end.

    The report XML is gzipped and hashed on a thread (zlib and hashlib run
    without the GIL) from the start, next to the byte checks that precede
    the parse; the report is split across processes, and each one looks up
    the IPs of its own part as soon as it has parsed it (``set_part_hook``),
    so no phase runs on one core while the other waits.
    """
    from dmarclens.core.arrow import import_pyarrow_without_numpy
    from dmarclens.core.pipes import send_pickled
    from dmarclens.core.records import ColumnarRecords
    from dmarclens.ingest.parsed import parse_raw
    from dmarclens.parse.fast import set_part_hook
    from dmarclens.parse.stream import set_spill_dir

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_spill_dir(spill)
    import_pyarrow_without_numpy()  # before the parts are forked: they inherit it
    raw = box.pop()
    payload = _payload(raw, spill)
    packed: dict[str, Any] = {}
    packer = None
    if payload is not None:
        packer = threading.Thread(target=_pack, args=(payload, packed))
        packer.start()
        sha256, size = (None, len(raw.data)) if payload is raw.data else (raw.sha256, len(raw.data))
        raw = dataclasses.replace(raw, data=payload)
        del payload
    set_part_hook(_part_facts)
    try:
        parsed = parse_raw(raw, pack=False, digest=packer is None)
    finally:
        set_part_hook(None)
    del raw
    if packer is not None:
        packer.join()
        parsed.sha256 = sha256 or packed.get("sha256")
        parsed.size_bytes = size
    item = parsed.item
    if item is not None and item.raw_xml is not None:
        if packed.get("gz") is not None:
            parsed.raw_sha256, parsed.raw_gz = packed["sha256"], packed["gz"]
            parsed.item = item = dataclasses.replace(item, raw_xml=None)
        else:
            from dmarclens.ingest.parsed import pack_xml

            pack_xml(parsed)
            item = parsed.item
    if item is not None and item.report is not None and len(item.report.records):
        records = item.report.records
        if isinstance(records, ColumnarRecords) and records.part_extras:
            # the split parse looked each part's IPs up (an IP may be in two parts)
            parsed.ip_facts = records.part_extras
            records.part_extras = []
        else:
            from dmarclens.store import write

            parsed.ip_facts = _facts_in_two(sorted(write.source_ips(records)))
        seal = getattr(records, "seal", None)
        if seal is not None:
            seal()
    send_pickled(sender, parsed)
    sender.close()


def _payload(raw: RawItem, inflate_dir: str | None = None) -> bigfile.Buffer | None:
    """The report bytes as the parser will see them (decompressed, UTF-8), or
    None when that cannot be told here (the parse then says why). A
    compressed report is inflated into a file in ``inflate_dir`` and mapped,
    so it is not held in memory either (``core.payload.decompress``)."""
    from dmarclens.core.errors import ReportParseError
    from dmarclens.core.payload import decompress
    from dmarclens.parse.report import to_utf8

    if raw.problem or raw.kind_hint == "failure" or not raw.data:
        return None
    try:
        return to_utf8(decompress(raw.data, inflate_dir=inflate_dir))
    except (ReportParseError, MemoryError, OSError, ValueError, EOFError):
        return None


def _pack(payload: bytes, out: dict[str, Any]) -> None:
    from dmarclens.store import write

    out["sha256"], out["gz"] = write.hash_and_gzip(payload)


def _part_facts(ips: set[str]) -> Any:
    return _facts(sorted(ips))


def _facts_in_two(ips: list[str]) -> Any:
    """Facts for a report parsed in one piece: half here, half in a forked helper."""
    from dmarclens.core.arrow import import_pyarrow
    from dmarclens.core.pipes import receive_pickled

    half = len(ips) // 2 if len(ips) >= FACTS_SPLIT_MIN else len(ips)
    if half == len(ips):
        return _facts(ips)
    ctx = multiprocessing.get_context("fork")
    receiver, helper_sender = ctx.Pipe(duplex=False)
    helper = ctx.Process(target=_facts_helper, args=(ips[half:], helper_sender), daemon=True)
    helper.start()
    helper_sender.close()
    tables = [_facts(ips[:half])]
    try:
        tables.append(receive_pickled(receiver))
    except (EOFError, OSError, pickle.UnpicklingError):
        tables.append(_facts(ips[half:]))
    finally:
        receiver.close()
        helper.join()
    return import_pyarrow().concat_tables(tables)


FILE_TASK_BYTES = 64 * 1024
"""What a file that a worker reads counts for against ``AHEAD_BYTES`` (its
size is not known without a stat per file)."""

AHEAD_BYTES = 64 * 1024 * 1024
"""Input bytes the pool may hold in flight beyond its minimum window: the
bound on what parsing ahead of the writer costs in memory."""


def _open_big_files(items: Iterable[RawItem | FileTask]) -> Iterator[RawItem | FileTask]:
    """Files of ``BIG_ITEM_BYTES`` or more are read here, not by a worker.

    A worker turns one task into all of its file's payloads: a 1 GB mbox
    would become one task parsed by one process, its thousands of results
    held until the last. Read here, its messages spread over the chunks like
    any other items, and their bytes count against ``AHEAD_BYTES``. Small
    files (the usual reports) cost the writer one stat each.
    """
    from dmarclens.sources.files import FileTask, expand

    for item in items:
        if isinstance(item, FileTask):
            try:
                big = os.stat(item.path).st_size >= BIG_ITEM_BYTES
            except OSError:
                big = False  # the worker reports why it cannot be read
            if big:
                yield from expand(item)
                continue
        yield item


def _pooled(items: Iterator[RawItem | FileTask], workers: int, ahead: int = 0) -> Iterator[Parsed]:
    """Chunks of items to ``workers`` processes, results back in input order.

    Not ``multiprocessing.Pool``: its worker-handler thread waits on the
    result pipe too and spins while a result sits unread, which on this
    writer-bound path burnt ~0.7 s of CPU per 10,000 reports and fought the
    writer for the GIL. Here one thread sends tasks (a send may block while
    a worker is itself sending), one receives results (Arrow buffers out of
    band, see ``send_pickled``) so workers never wait on a full pipe while
    the writer commits, and a worker that dies has its chunks parsed
    in-process instead.
    """
    import queue

    from dmarclens.sources.files import FileTask

    ctx = _context()
    least = workers * 3  # chunks always in flight, whatever their size
    most = max(least, -(-ahead // CHUNK_ITEMS))
    procs: list[Any] = []
    conns: list[Any] = []
    for _ in range(workers):
        mine, theirs = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker_main, args=(theirs,), daemon=True)
        proc.start()
        theirs.close()
        procs.append(proc)
        conns.append(mine)
    outbox: queue.SimpleQueue[tuple[int, Any] | None] = queue.SimpleQueue()
    inbox: queue.SimpleQueue[tuple[bool, int, Any]] = queue.SimpleQueue()
    feeder = threading.Thread(target=_feed, args=(conns, outbox), daemon=True)
    feeder.start()
    receiver = threading.Thread(target=_receive, args=(conns, inbox), daemon=True)
    receiver.start()
    chunks: dict[int, tuple[list[Any], int, int]] = {}  # seq -> (chunk, size, worker), until its result is out
    results: dict[int, Any] = {}
    busy = [0] * workers
    alive = [True] * workers
    submitted = emitted = in_flight = 0
    exhausted = False
    try:
        while True:
            while not exhausted and (len(chunks) < least or (len(chunks) < most and in_flight < AHEAD_BYTES)):
                chunk = list(islice(items, CHUNK_ITEMS))
                if not chunk:
                    exhausted = True
                    break
                size = sum(FILE_TASK_BYTES if isinstance(raw, FileTask) else len(raw.data) for raw in chunk)
                live = [w for w in range(workers) if alive[w]]
                if live:
                    w = min(live, key=busy.__getitem__)
                    busy[w] += 1
                    outbox.put((w, (submitted, chunk)))
                else:
                    w = -1
                    results[submitted] = _parse_chunk(chunk)
                chunks[submitted] = (chunk, size, w)
                in_flight += size
                submitted += 1
            if emitted not in results:
                if emitted not in chunks:
                    break  # everything submitted has been handed out
                ok, w, payload = inbox.get()
                if ok:
                    busy[w] -= 1
                    seq, result = payload
                    results[seq] = result
                elif alive[w]:  # every result it sent before dying came first
                    alive[w] = False
                    lost = sorted(q for q, (_, _, owner) in chunks.items() if owner == w and q not in results)
                    procs[w].join(timeout=1)
                    log.warning("a parsing process died (exit %s); parsing its %d chunk(s) in-process",
                                procs[w].exitcode, len(lost))
                    for q in lost:
                        results[q] = _parse_chunk(chunks[q][0])
                    busy[w] = 0
                continue
            done, batch = results.pop(emitted)
            _, size, _ = chunks.pop(emitted)
            in_flight -= size
            emitted += 1
            if batch is not None:
                for p in done:
                    attach = getattr(p.item.report.records, "attach", None) if p.item and p.item.report else None
                    if attach is not None:
                        attach(batch)
            yield from done
    finally:
        outbox.put(None)
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        for proc in procs:
            proc.join()
        feeder.join(timeout=5)
        receiver.join(timeout=5)  # it ends on the workers' end of file
        for conn in conns:
            conn.close()


def _receive(conns: list[Any], inbox: Any) -> None:
    """Take every result as soon as a worker sends it; (False, worker, None)
    once a worker's pipe is closed (it exited or died)."""
    from multiprocessing.connection import wait

    from dmarclens.core.pipes import receive_pickled

    live = list(conns)
    while live:
        for conn in wait(live):
            w = conns.index(conn)
            try:
                inbox.put((True, w, receive_pickled(conn)))
            except (EOFError, OSError, pickle.UnpicklingError):
                live.remove(conn)
                inbox.put((False, w, None))


def _feed(conns: list[Any], outbox: Any) -> None:
    """Send queued tasks to their workers (a thread: a send blocks while the
    worker's end of the pipe is full)."""
    from dmarclens.core.pipes import send_pickled

    while True:
        job = outbox.get()
        if job is None:
            return
        w, task = job
        try:
            send_pickled(conns[w], task)
        except (OSError, ValueError):
            continue  # the worker is gone; the reader notices and parses its chunks in-process


def _worker_main(conn: Any) -> None:
    """A pool worker: parse chunks until the writer closes the pipe."""
    from dmarclens.core.pipes import receive_pickled, send_pickled

    _init_worker()
    while True:
        try:
            seq, chunk = receive_pickled(conn)
        except (EOFError, OSError):
            return
        send_pickled(conn, (seq, _parse_chunk(chunk)))


def _context() -> Any:
    """``fork`` where available: workers inherit the imported modules and start
    in milliseconds. The pool is started before the parent parses anything,
    so no library thread pool exists yet to be copied half-alive."""
    try:
        return multiprocessing.get_context("fork")
    except ValueError:
        return multiprocessing.get_context("spawn")


def _init_worker() -> None:
    # Ctrl-C goes to the parent, which tears the pool down; workers dying on
    # their own SIGINT first would only add tracebacks to the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The pool already keeps every core busy: a big report is not split again.
    from dmarclens.core.arrow import import_pyarrow_without_numpy
    from dmarclens.parse.fast import set_split_processes

    set_split_processes(1)
    # The parser builds Arrow data: load pyarrow now, without NumPy. With
    # NumPy came OpenBLAS and its spinning threads, which burnt a share of
    # the very cores the workers parse on.
    import_pyarrow_without_numpy()


def _parse_chunk(chunk: list[RawItem | FileTask]) -> tuple[list[Parsed], Any]:
    # No IP lookups here: small reports repeat the same senders, so the
    # writer's anti-join leaves few IPs to look up, while facts for every
    # report cost more to look up, pickle and unpickle than they save.
    from dmarclens.ingest.parsed import parse_raw
    from dmarclens.sources.files import expand

    return _share_rows([parse_raw(raw) for item in chunk for raw in expand(item)])


def _share_rows(parsed: list[Parsed]) -> tuple[list[Parsed], Any]:
    """The rows of a chunk's short reports as one Arrow batch (report_key first).

    Why: the single writer is the pool's limit. Rows sent as Python tuples
    cost it an object per value to unpickle and a conversion to Arrow; one
    batch per chunk arrives as a few buffers and goes to DuckDB as it is.
    Each report keeps its span of the batch (``ColumnarRecords.share``).
    """
    from dmarclens.core.arrow import gc_paused
    from dmarclens.core.records import ColumnarRecords, RowChunk

    rows: list[tuple[Any, ...]] = []
    keys: list[str] = []
    for p in parsed:
        records = p.item.report.records if p.item is not None and p.item.report is not None else None
        if isinstance(records, ColumnarRecords) and not records.batches and len(records.tail):
            assert p.key is not None
            start = len(rows)
            rows.extend(records.tail.rows)
            keys.extend([p.key] * (len(rows) - start))
            records.share(start)
    if not rows:
        return parsed, None
    with gc_paused():
        return parsed, RowChunk(rows).to_arrow(keys)
