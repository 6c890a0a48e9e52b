"""Parse with a pool of worker processes, store with one writer.

Why processes: parsing is pure Python work on bytes (``pipeline.parse_raw``
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

import logging
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dmarclens.models import RawItem
    from dmarclens.pipeline import Parsed

log = logging.getLogger(__name__)

POOL_MIN_ITEMS = 64
"""Fewer items than this are parsed in-process: forking workers costs more
than parsing a few dozen small reports."""

CHUNK_ITEMS = 16
"""Items sent to a worker per task: enough to amortise pickling round trips,
few enough that one big report does not hold back the rest."""


def resolve_workers(workers: int | None) -> int:
    """``0`` or ``None`` means one worker per available core."""
    if workers is None or workers <= 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    return workers


def parse_all(raws: Iterable[RawItem], *, workers: int | None = 1) -> Iterator[Parsed]:
    """Every item parsed, in input order, by ``workers`` processes.

    With one worker (or a short input) this is ``map(parse_raw, raws)`` in
    the calling process.
    """
    from dmarclens.pipeline import parse_raw

    n = resolve_workers(workers)
    items = iter(raws)
    if n <= 1:
        yield from map(parse_raw, items)
        return
    head = list(islice(items, POOL_MIN_ITEMS))
    if len(head) < POOL_MIN_ITEMS:
        yield from map(parse_raw, head)
        return
    yield from _pooled(chain(head, items), n)


def _pooled(items: Iterator[RawItem], workers: int) -> Iterator[Parsed]:
    ctx = _context()
    window = workers * 3
    pool = ctx.Pool(workers, initializer=_init_worker)
    try:
        pending: deque[Any] = deque()

        def submit() -> bool:
            chunk = list(islice(items, CHUNK_ITEMS))
            if not chunk:
                return False
            pending.append(pool.apply_async(_parse_chunk, (chunk,)))
            return True

        while len(pending) < window and submit():
            pass
        while pending:
            done = pending.popleft().get()
            submit()
            yield from done
        pool.close()
    finally:
        pool.terminate()
        pool.join()


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
    from dmarclens.fastparse import set_split_processes

    set_split_processes(1)


def _parse_chunk(chunk: list[RawItem]) -> list[Parsed]:
    from dmarclens.pipeline import parse_raw

    return [parse_raw(raw) for raw in chunk]
