"""A report's records as Arrow: the columnar form that crosses from the parser to the store.

``RowChunk`` holds up to ``CHUNK_ROWS`` records as one tuple per row,
``ColumnarRecords`` a whole report as Arrow batches plus one such chunk, and
``record_batches_for`` merges the records of many reports into a few Arrow
batches for one INSERT. The parsers build them, the writer consumes them;
neither needs the other to understand them.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate, chain
from typing import TYPE_CHECKING, Any

from dmarclens.core.arrow import gc_paused, import_pyarrow
from dmarclens.core.models import RecordBatch

if TYPE_CHECKING:
    import pyarrow as pa

    from dmarclens.core.spill import SpilledBatches


CHUNK_ROWS = 20_000
"""Rows per Arrow record batch. Big enough that Arrow conversion and DuckDB
inserts run at full speed, small enough that the Python lists of one chunk
stay a few MB whatever the report size."""


EPOCH = date(1970, 1, 1)


ROW_FIELDS = (
    "day", "interval_begin", "interval_end", "source_ip", "count", "disposition", "policy_dkim",
    "policy_spf", "dkim_aligned", "spf_aligned", "dmarc_pass", "header_from", "envelope_from",
    "envelope_to", "override_reasons", "dkim", "spf",
)
"""Order of the values in one row tuple of a ``RowChunk``."""


ARROW_COLUMNS = (
    "day", "interval_begin", "interval_end", "source_ip", "count", "disposition", "policy_dkim",
    "policy_spf", "dkim_aligned", "spf_aligned", "dmarc_pass", "override_reasons", "header_from",
    "envelope_from", "envelope_to", "dkim", "spf",
)
"""Record columns in ``records`` table order (without report_key and the run id)."""


NESTED = {
    "override_reasons": ("type", "comment"),
    "dkim": ("domain", "selector", "result"),
    "spf": ("domain", "scope", "result"),
}


class RowChunk:
    """Up to ``CHUNK_ROWS`` records as one tuple per row (see ``ROW_FIELDS``).

    Why tuples: appending one tuple per record costs far less than seventeen
    list appends, and turning a chunk into Arrow columns is one ``zip``. Times
    are integers (days and microseconds since the epoch) because Arrow takes
    those without per-value conversion; nested results are tuples of tuples.
    Short reports stay in this form so the writer can merge hundreds of them
    into one Arrow batch per transaction.
    """

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[Any, ...]] | None = None) -> None:
        self.rows: list[tuple[Any, ...]] = rows if rows is not None else []

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> list[tuple[Any, ...]]:
        return self.rows

    def __setstate__(self, state: list[tuple[Any, ...]]) -> None:
        self.rows = state

    def column(self, name: str) -> list[Any]:
        """One column in ``RecordBatch`` form (dates, datetimes, lists of dicts)."""
        i = ROW_FIELDS.index(name)
        values = [r[i] for r in self.rows]
        if name == "day":
            return [EPOCH + timedelta(days=d) for d in values]
        if name in ("interval_begin", "interval_end"):
            return [from_micros(us) for us in values]
        if name in NESTED:
            names = NESTED[name]
            return [[dict(zip(names, entry, strict=True)) for entry in v] for v in values]
        return values

    def to_arrow(self, report_keys: Sequence[str] | None = None) -> pa.RecordBatch:
        """The chunk as an Arrow batch in ``records`` column order.

        ``report_keys`` (one per row) adds a leading report_key column so the
        rows of many reports go to DuckDB in one INSERT.
        """
        pa = import_pyarrow()

        string = pa.string()
        cols = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(ROW_FIELDS)
        by_name = dict(zip(ROW_FIELDS, cols, strict=True))

        def nested(name: str) -> Any:
            values = by_name[name]
            offsets = [0, *accumulate(map(len, values))]
            flat = list(chain.from_iterable(values))
            names = NESTED[name]
            parts = list(zip(*flat, strict=True)) if flat else [()] * len(names)
            children = pa.StructArray.from_arrays([pa.array(p, string) for p in parts], names=list(names))
            return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), children)

        stamp = pa.timestamp("us", tz="UTC")
        arrays: dict[str, Any] = {
            "day": pa.array(by_name["day"], pa.int32()).view(pa.date32()),
            "interval_begin": pa.array(by_name["interval_begin"], pa.int64()).view(stamp),
            "interval_end": pa.array(by_name["interval_end"], pa.int64()).view(stamp),
            "count": pa.array(by_name["count"], pa.int64()),
        }
        for name in ("dkim_aligned", "spf_aligned", "dmarc_pass"):
            arrays[name] = pa.array(by_name[name], pa.bool_())
        for name in NESTED:
            arrays[name] = nested(name)
        for name in ARROW_COLUMNS:
            if name not in arrays:
                arrays[name] = pa.array(by_name[name], string)
        out = [arrays[n] for n in ARROW_COLUMNS]
        names = list(ARROW_COLUMNS)
        if report_keys is not None:
            out.insert(0, pa.array(report_keys, string))
            names.insert(0, "report_key")
        return pa.RecordBatch.from_arrays(out, names=names)


@dataclass(frozen=True)
class Vetted:
    """What the streaming parser saw while reading, for cheap validation."""

    min_count: int | None
    max_count: int | None
    texts: frozenset[str] | None  # None: too many distinct strings to list


class ColumnarRecords(RecordBatch):
    """A report's records as Arrow batches plus one unconverted tail chunk.

    It is a ``RecordBatch``: ``len()``, ``messages`` and every column
    attribute work as before (a column is materialised as a Python list on
    first access, for tests and for code that wants lists). The writer takes
    the Arrow batches as they are instead of converting row by row.
    """

    def __init__(self, batches: list[pa.RecordBatch] | SpilledBatches, tail: RowChunk, *, rows: int,
                 messages: int) -> None:
        # RecordBatch.__init__ is not called on purpose: its list fields are
        # served by the properties installed below.
        self.batches = batches
        self.tail = tail
        self._rows = rows
        self._messages = messages
        self._cache: dict[str, list[Any]] = {}
        self.vetted: Vetted | None = None
        self.part_extras: list[Any] = []  # see set_part_hook
        # Rows held in a batch shared with the other reports of a pool
        # worker's chunk (report_key first): (batch, first row, rows). A
        # worker sends the span alone; the writer attaches the batch.
        self.chunk: tuple[pa.RecordBatch, int, int] | None = None
        self.span: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self._rows

    def __repr__(self) -> str:
        return f"ColumnarRecords(rows={self._rows}, batches={len(self.batches)}, tail={len(self.tail)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordBatch):
            return NotImplemented
        return len(self) == len(other) and self.columns() == other.columns()

    __hash__ = None  # type: ignore[assignment]  # equal by content, so unhashable, like the lists it holds

    def __getstate__(self) -> dict[str, Any]:
        return {"batches": self.arrow_batches() if self.chunk is not None else self.batches,
                "tail": self.tail, "_rows": self._rows,
                "_messages": self._messages, "_cache": {}, "vetted": self.vetted,
                "part_extras": self.part_extras, "chunk": None, "span": self.span}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"chunk": None, "span": None, **state})

    @property
    def messages(self) -> int:
        return self._messages

    def needs_repair(self, *, max_count: int, unsafe: re.Pattern[str]) -> bool | None:
        """Whether any count is outside ``0..max_count`` or any stored string
        matches ``unsafe``, answered from what the parser noted while reading
        (a few distinct strings), not by scanning rows; IPs passed
        ``inet_pton`` and cannot hold such characters. ``None`` when the
        parser could not vouch (too many distinct strings): scan instead.
        """
        v = self.vetted
        if v is None or v.texts is None:
            return None
        if v.min_count is not None and (v.min_count < 0 or (v.max_count or 0) > max_count):
            return True
        return any(unsafe.search(t) for t in v.texts)

    def seal(self) -> None:
        """Turn the Python-tuple tail into an Arrow batch too.

        Done before a big report crosses a process boundary: Arrow pickles
        as a few buffers and holds rows in a fraction of the memory.
        """
        if len(self.tail):
            with gc_paused():
                self.batches.append(self.tail.to_arrow())
            self.tail = RowChunk()
            self._cache.clear()

    def release(self) -> None:
        """Free the rows once the store has them; ``len()`` and ``messages`` stay.

        The writer calls this right after the INSERT so a 50,000-row report's
        Arrow data is not held through the rest of the transaction. Reading a
        column afterwards is a bug and raises instead of returning nothing.
        """
        had_arrow = bool(self.batches)
        self.batches = []
        self.chunk = None
        self.tail = RowChunk()
        self._cache.clear()
        self._released = True
        if had_arrow:
            import_pyarrow().default_memory_pool().release_unused()  # mimalloc keeps freed pages otherwise

    def arrow_batches(self) -> list[pa.RecordBatch]:
        """All rows as Arrow batches (the tail converted on the fly)."""
        own = list(self.batches)
        if self.chunk is not None:
            batch, start, n = self.chunk
            own.append(batch.slice(start, n).drop_columns(["report_key"]))
        return [*own, self.tail.to_arrow()] if len(self.tail) else own

    def share(self, start: int) -> None:
        """Hand the tail rows over to a chunk batch built by the caller from
        them, starting at row ``start`` (``dmarclens.ingest.pool``)."""
        self.span = (start, len(self.tail))
        self.tail = RowChunk()
        self._cache.clear()

    def attach(self, batch: pa.RecordBatch) -> None:
        """The writer's side of ``share``: the chunk batch has arrived."""
        if self.span is not None:
            self.chunk = (batch, *self.span)
            self.span = None

    def unique_source_ips(self) -> set[str]:
        """Distinct source IPs, without a Python list of every row."""
        ips = source_ips(self.tail.rows, self.batches)
        if self.chunk is not None:
            batch, start, n = self.chunk
            ips.update(batch.column(1 + ARROW_COLUMNS.index("source_ip")).slice(start, n).to_pylist())
        return ips

    def _column(self, name: str) -> list[Any]:
        if self.__dict__.get("_released"):
            raise RuntimeError("these records were written to the store and released; read them from the database")
        cached = self._cache.get(name)
        if cached is None:
            cached = []
            for b in self.arrow_batches() if self.chunk is not None else self.batches:
                values = b.column(ARROW_COLUMNS.index(name)).to_pylist()
                if name in ("interval_begin", "interval_end"):
                    values = [v.astimezone(UTC) for v in values]
                cached.extend(values)
            cached.extend(self.tail.column(name))
            self._cache[name] = cached
        return cached

    def columns(self) -> dict[str, list[Any]]:
        return {name: self._column(name) for name in self.COLUMNS}


def _column_property(name: str) -> property:
    return property(lambda self: self._column(name), doc=f"The {name} column as a Python list.")


for _name in RecordBatch.COLUMNS:
    setattr(ColumnarRecords, _name, _column_property(_name))


def record_batches_for(items: Iterable[tuple[str, RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """Arrow batches (report_key first) for the records of several reports.

    Why here and not per report: a transaction of 500 small reports becomes a
    handful of Arrow batches, so DuckDB sees a few INSERTs instead of 500. A
    big report's own batches pass through; short fast-path tails and
    parsedmarc-path ``RecordBatch`` lists are merged before conversion.
    """
    merged: list[tuple[Any, ...]] = []
    keys: list[str] = []
    shared: list[list[Any]] = []  # [batch, first row, rows] runs of pool workers' chunk batches
    shared_rows = 0
    for key, batch in items:
        chunk = getattr(batch, "chunk", None)
        if chunk is not None:
            b, start, n = chunk
            if shared and shared[-1][0] is b and shared[-1][1] + shared[-1][2] == start:
                shared[-1][2] += n  # the next report of the same chunk: one run
            else:
                shared.append([b, start, n])
            shared_rows += n
            if shared_rows >= CHUNK_ROWS:
                yield _shared_table(shared)
                shared, shared_rows = [], 0
            continue
        if isinstance(batch, ColumnarRecords):
            for b in batch.batches:
                yield _with_key(b, key)
            tail = batch.tail.rows
        elif len(batch):
            with gc_paused():
                tail = rows_from_batch(batch).rows
        else:
            continue
        if tail:
            merged.extend(tail)
            keys.extend([key] * len(tail))
        if len(merged) >= CHUNK_ROWS:
            with gc_paused():
                converted = RowChunk(merged).to_arrow(keys)
            yield converted
            merged, keys = [], []
    if merged:
        with gc_paused():
            converted = RowChunk(merged).to_arrow(keys)
        yield converted
    if shared:
        yield _shared_table(shared)


def _shared_table(runs: list[list[Any]]) -> pa.Table:
    """Runs of chunk batches as one table: usually whole batches (every
    report of a worker's chunk is stored), so nothing is copied."""
    pa = import_pyarrow()
    return pa.Table.from_batches([b if start == 0 and n == b.num_rows else b.slice(start, n) for b, start, n in runs])


def _with_key(batch: pa.RecordBatch, key: str) -> pa.RecordBatch:
    pa = import_pyarrow()

    keys = pa.array([key] * batch.num_rows, pa.string())
    return pa.RecordBatch.from_arrays([keys, *batch.columns], names=["report_key", *batch.schema.names])


def rows_from_batch(batch: RecordBatch) -> RowChunk:
    """A list-of-dicts ``RecordBatch`` (the parsedmarc path) as a RowChunk."""
    cols: list[Any] = []
    for name in ROW_FIELDS:
        values = getattr(batch, name)
        if name == "day":
            values = [(d - EPOCH).days for d in values]
        elif name in ("interval_begin", "interval_end"):
            values = [micros(t) for t in values]
        elif name in NESTED:
            names = NESTED[name]
            values = [tuple(tuple(e.get(n) for n in names) for e in entries) for entries in values]
        cols.append(values)
    return RowChunk(list(zip(*cols, strict=True)))


def micros(t: datetime) -> int:
    delta = t - _EPOCH_DT
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return _EPOCH_DT + timedelta(microseconds=us)


_EPOCH_DT = datetime(1970, 1, 1, tzinfo=UTC)


def source_ips(rows: Iterable[tuple[Any, ...]], batches: Iterable[pa.RecordBatch]) -> set[str]:
    """Distinct source IPs of tuple rows and Arrow batches (records column order)."""
    i = ROW_FIELDS.index("source_ip")
    ips = {r[i] for r in rows}
    for b in batches:
        # to_pylist, not Array.unique: that loads pyarrow.compute (~10 MB)
        # into a process that otherwise never needs it.
        ips.update(b.column(ARROW_COLUMNS.index("source_ip")).to_pylist())
    return ips
