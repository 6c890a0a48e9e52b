"""Streaming parser for aggregate reports: the hot path of ``dmarclens ingest``.

Why a second parser next to parsedmarc: parsedmarc turns the whole document
into nested dicts twice (xmltodict) and looks up every IP while parsing, so a
50,000-record report takes ~14 s and 430 MB. This module walks the XML once
with ``lxml.etree.iterparse``, clears each ``<record>`` as soon as it is read,
and keeps one tuple per row only until ``CHUNK_ROWS`` rows become an Arrow
record batch, so a report of any size is held as compact Arrow memory, never
as one Python object per record. A big report is cut at ``<record>``
boundaries and its parts parsed by forked processes (``_parse_split``).

parsedmarc stays the reference. The output here must be exactly what
``parse.normalize(parsedmarc.parse_aggregate_report_xml(...))`` gives, including
parsedmarc's defaults (alignment modes ``r``, ``sp`` = ``p``, DKIM selector
``none``, SPF scope ``mfrom``, ``envelope_from`` taken from the last SPF
result), its clean-ups (lower-cased result words and header_from, report_id
without ``<>`` and ``@suffix``, org_name reduced to its base domain) and its
day split of reports longer than 24 hours. Whatever this parser cannot vouch
for (broken XML, other encodings, attributes, comments, a DOCTYPE, namespaces
below the root, missing or repeated elements, odd IP spellings, a record
parsedmarc would skip...) raises ``FastPathDeclined`` and
``parse.parse_aggregate`` hands the bytes to parsedmarc;
``tests/perf/test_differential.py`` holds the two to the same output.

Security: the parser never loads a DTD, never resolves entities, never touches
the network and keeps libxml2's size limits (``huge_tree=False``); documents
with a DOCTYPE are declined here and rejected by parsedmarc.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import pickle
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from io import BytesIO
from itertools import accumulate, chain
from typing import TYPE_CHECKING, Any

from dmarclens import bigfile
from dmarclens.models import PolicyPublished, RecordBatch, Report, ReportFormat
from dmarclens.parse import is_draft_schema
from dmarclens.spill import SpilledBatches

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

CHUNK_ROWS = 20_000
"""Rows per Arrow record batch. Big enough that Arrow conversion and DuckDB
inserts run at full speed, small enough that the Python lists of one chunk
stay a few MB whatever the report size."""

RFC9990_NS = "urn:ietf:params:xml:ns:dmarc-2.0"

_EPOCH = date(1970, 1, 1)
_SPLIT_THRESHOLD_SECONDS = 24.0 * 3600  # parsedmarc's normalize_timespan_threshold_hours
_MISSING: Any = object()

# Same matching rule as parsedmarc's, which decides xml_namespace.
_NS_DECL = re.compile(r"""xmlns(?::[a-zA-Z_][\w.-]*)?\s*=\s*["']([^"']+)["']""")
_FIRST_TAG = re.compile(rb"<[^?!/]")
_ROOT_TAG = re.compile(rb"<feedback[\s/>]")
_ATTRIBUTE = re.compile(rb"=\s*[\"']")
_XML_DECL = re.compile(
    rb"""<\?xml\s+version\s*=\s*(["'])1\.0\1"""
    rb"""(?:\s+encoding\s*=\s*(["'])[A-Za-z][A-Za-z0-9._-]*\2)?"""
    rb"""(?:\s+standalone\s*=\s*(["'])(?:yes|no)\3)?\s*\?>"""
)
_UTF8_BOM = b"\xef\xbb\xbf"


class FastPathDeclined(Exception):
    """The streaming parser will not vouch for this input; parsedmarc decides.

    Not an error: the message names what was unusual so the fallback can be
    logged and counted.
    """


class _HidePandas:
    """Import hook that makes ``import pandas`` fail, used for one call only."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas hidden while pyarrow checks for it")
        return None


class _HideNumpy:
    """Import hook that makes ``import numpy`` fail (see ``import_pyarrow_without_numpy``)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError("numpy hidden: this process never converts to NumPy")
        return None


_numpy_free = False


def declare_numpy_free() -> None:
    """Say that this whole process will never convert Arrow data to NumPy or
    pandas (the ``dmarclens ingest`` command: parse, store, classify, exit),
    so pyarrow is loaded without NumPy here too: 0.1 s and 10 MB less."""
    global _numpy_free
    _numpy_free = True


def import_pyarrow_without_numpy() -> Any:
    """pyarrow for a parsing process that dmarclens forked and that exits
    after parsing: loaded without NumPy (optional to pyarrow), which is two
    thirds of its 0.15 s import. NumPy conversions then fail in this process,
    so never call it in a process that runs user code, only in children (or
    where ``declare_numpy_free`` was called).
    """
    _load_pyarrow_hiding_numpy()
    return import_pyarrow()


def _load_pyarrow_hiding_numpy() -> None:
    if "pyarrow" not in sys.modules and "numpy" not in sys.modules:
        hook = _HideNumpy()
        sys.meta_path.insert(0, hook)
        try:
            import pyarrow  # noqa: F401
        finally:
            sys.meta_path.remove(hook)


@lru_cache(maxsize=1)
def import_pyarrow() -> Any:
    """pyarrow, set up so that building arrays from lists never imports pandas.

    ``pyarrow.array()`` first asks whether its argument is a pandas object,
    and to answer it imports pandas: about 0.15 s and 45 MB of RSS in an
    ingest that never touches pandas. The first question is asked here with
    pandas hidden, and pyarrow remembers the answer for plain lists. Real
    pandas interop still works afterwards: ``to_pandas``/``from_pandas``
    check again and import pandas then.
    """
    if _numpy_free:
        _load_pyarrow_hiding_numpy()
    import pyarrow as pa

    if "pandas" not in sys.modules:
        hook = _HidePandas()
        sys.meta_path.insert(0, hook)
        try:
            pa.array([0], pa.int8())
        finally:
            sys.meta_path.remove(hook)
    return pa


# --------------------------------------------------------------------------- columns

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
            return [_EPOCH + timedelta(days=d) for d in values]
        if name in ("interval_begin", "interval_end"):
            return [_from_micros(us) for us in values]
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

        def nested(name: str) -> pa.Array:
            values = by_name[name]
            offsets = [0, *accumulate(map(len, values))]
            flat = list(chain.from_iterable(values))
            names = NESTED[name]
            parts = list(zip(*flat, strict=True)) if flat else [()] * len(names)
            children = pa.StructArray.from_arrays([pa.array(p, string) for p in parts], names=list(names))
            return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), children)

        stamp = pa.timestamp("us", tz="UTC")
        arrays: dict[str, pa.Array] = {
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
class _Vetted:
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

    def __init__(self, batches: list[pa.RecordBatch], tail: RowChunk, *, rows: int, messages: int) -> None:
        # RecordBatch.__init__ is not called on purpose: its list fields are
        # served by the properties installed below.
        self.batches = batches
        self.tail = tail
        self._rows = rows
        self._messages = messages
        self._cache: dict[str, list[Any]] = {}
        self.vetted: _Vetted | None = None
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

    __hash__ = None  # type: ignore[assignment]

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
        them, starting at row ``start`` (``dmarclens.parallel``)."""
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
        ips = _source_ips(self.tail.rows, self.batches)
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
            values = [(d - _EPOCH).days for d in values]
        elif name in ("interval_begin", "interval_end"):
            values = [_micros(t) for t in values]
        elif name in NESTED:
            names = NESTED[name]
            values = [tuple(tuple(e.get(n) for n in names) for e in entries) for entries in values]
        cols.append(values)
    return RowChunk(list(zip(*cols, strict=True)))


def _micros(t: datetime) -> int:
    delta = t - _EPOCH_DT
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(us: int) -> datetime:
    return _EPOCH_DT + timedelta(microseconds=us)


_EPOCH_DT = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- helpers


@lru_cache(maxsize=1)
def _psl() -> tuple[Any, tuple[str, ...]]:
    """The public suffix list and parsedmarc's overrides, without importing
    parsedmarc (its import alone costs ~0.3 s of every ingest)."""
    import publicsuffixlist

    spec = importlib.util.find_spec("parsedmarc")
    overrides: list[str] = []
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "resources", "maps", "psl_overrides.txt")
        with open(path, encoding="utf-8") as fh:
            overrides = [line.strip() for line in fh.read().splitlines() if line.strip()]
    return publicsuffixlist.PublicSuffixList(), tuple(overrides)


@lru_cache(maxsize=4096)
def base_domain(name: str) -> str | None:
    """Registrable domain as parsedmarc computes it for org_name (PSL + its overrides)."""
    psl, overrides = _psl()
    lowered = name.lower()
    found = psl.privatesuffix(lowered)
    for suffix in overrides:
        if lowered.endswith(suffix):
            return suffix.strip(".").strip("-")
    return found


def _lower(value: str | None) -> str | None:
    """parse.normalize's clean-up of a word: stripped, lower case, '' → None."""
    if value is None:
        return None
    text = value.strip().lower()
    return text or None


def report_time(ts: int) -> datetime:
    """A report timestamp as parsedmarc turns it into UTC.

    parsedmarc renders the epoch as local wall time and parses it back, which
    loses the DST ``fold``; doing the same keeps an ambiguous autumn hour
    identical to the reference in non-UTC time zones.
    """
    return datetime.fromtimestamp(ts).replace(fold=0).astimezone(UTC)


def day_split(begin: datetime, end: datetime, count: int) -> list[tuple[datetime, datetime, int]]:
    """Share ``count`` messages over the UTC days of ``[begin, end)``.

    Each day gets its share of the interval's seconds; shares are rounded
    down and the messages left over go one each to the days with the largest
    fractional parts (ties to the earlier day), so the parts add up to
    ``count`` exactly. Days whose part is 0 are left out. This is the rule
    parsedmarc applies to reports longer than 24 hours, written so the two
    agree to the message.
    """
    if count < 0:
        raise FastPathDeclined("negative message count in a report longer than a day")
    total = (end - begin).total_seconds()
    if total <= 0 or count == 0:
        return []
    spans: list[tuple[datetime, datetime, float]] = []
    midnight = datetime(begin.year, begin.month, begin.day, tzinfo=begin.tzinfo)
    while midnight < end:
        next_midnight = midnight + timedelta(days=1)
        lo = begin if begin > midnight else midnight
        hi = end if end < next_midnight else next_midnight
        seconds = (hi - lo).total_seconds()
        if seconds > 0:
            spans.append((lo, hi, seconds))
        midnight = next_midnight
    exact = [(s / total) * count for _, _, s in spans]
    parts = [int(x) for x in exact]
    left = count - sum(parts)
    if left:
        by_fraction = sorted(range(len(spans)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
        for i in by_fraction[:left]:
            parts[i] += 1
    return [(lo, hi, n) for (lo, hi, _), n in zip(spans, parts, strict=True) if n > 0]


def _leaf_text(elem: Any) -> str | None:
    """Text of an element xmltodict would turn into a plain string (or None).

    An element with child elements becomes a dict in parsedmarc's view; rather
    than mimic what each caller does with a dict, the fast path declines.
    """
    if len(elem):
        raise FastPathDeclined(f"element <{_local(elem.tag)}> has child elements")
    text = elem.text
    if text is None:
        return None
    return text.strip() or None


def _local(tag: Any) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else "?"


def _children(elem: Any, q: str, wanted: frozenset[str]) -> dict[str, Any]:
    """Named children of a report-level element; a repeated one is declined."""
    out: dict[str, Any] = {}
    cut = len(q)
    for child in elem:
        tag = child.tag
        if not tag.startswith(q):
            continue
        name = tag[cut:]
        if name in wanted:
            if name in out:
                raise FastPathDeclined(f"<{name}> appears twice in <{_local(elem.tag)}>")
            out[name] = child
    return out


# --------------------------------------------------------------------------- prescan


def _prescan(xml: bytes) -> tuple[int, str | None]:
    """Decide from the bytes alone whether the streaming path may run.

    Returns the offset just past the root start tag and parsedmarc's
    ``xml_namespace`` (the first ``xmlns`` value in the document). Only checks
    that lxml cannot do during the parse live here, each one a substring or
    simple pattern search: comments, processing instructions and namespace
    declarations below the root are caught by ``iterparse`` events instead.
    """
    # Slices, not startswith: ``xml`` may be a mapped file (dmarclens.bigfile).
    start = len(_UTF8_BOM) if xml[: len(_UTF8_BOM)] == _UTF8_BOM else 0
    if xml[start: start + 5] == b"<?xml" and not _XML_DECL.match(xml, start):
        raise FastPathDeclined("unusual XML declaration")
    m = _FIRST_TAG.search(xml)
    if m is None:
        raise FastPathDeclined("no element")
    if b"<!DOCTYPE" in xml[: m.start()]:
        raise FastPathDeclined("DOCTYPE declaration")
    if not _ROOT_TAG.match(xml, m.start()):
        raise FastPathDeclined("root element is not <feedback>")
    head_end = xml.find(b">", m.start())
    if head_end == -1:
        raise FastPathDeclined("unterminated root tag")
    head_end += 1
    # parsedmarc rewrites '<?xml ...>' lines and drops xs:schema tags with
    # regular expressions over the raw text; below the root such text can
    # only hide in CDATA sections (comments are declined during the parse).
    if bigfile.find(xml, b"<![CDATA[", head_end) != -1:
        raise FastPathDeclined("CDATA section")
    if bigfile.search(_ATTRIBUTE, xml, head_end):
        raise FastPathDeclined("attributes below the root")
    namespace = None
    head = xml[:head_end]
    if b"xmlns" in head:
        found = _NS_DECL.search(head.decode("utf-8", "ignore"))
        if found is None:
            raise FastPathDeclined("unreadable namespace declaration")
        namespace = found.group(1)
        if b"xmlns:xs" in head and bigfile.find(xml, b"xs:schema", head_end) != -1:
            raise FastPathDeclined("xs:schema element")
    return head_end, namespace


# --------------------------------------------------------------------------- parser


_REPORT_LEVEL = frozenset({"report_metadata", "policy_published", "version", "record"})
_META = frozenset({"org_name", "email", "extra_contact_info", "report_id", "date_range", "generator"})
_POLICY = frozenset({"domain", "adkim", "aspf", "p", "sp", "pct", "fo", "np", "testing", "discovery_method"})


def parse_aggregate_fast(xml: bytes, *, chunk_rows: int = CHUNK_ROWS) -> Report:
    """Parse aggregate-report XML into a ``Report``.

    ``xml`` is the decompressed report after ``parse.prepare_aggregate_xml``
    (the clean-ups both parsers get). Raises ``FastPathDeclined`` for anything
    parsedmarc should judge instead: a record parsedmarc would skip, a report
    it would reject (its messages stay the reference), any unusual syntax.
    """
    head_end, xml_namespace = _prescan(xml)
    parts = split_processes() if len(xml) >= SPLIT_MIN_BYTES else 1
    if parts > 1:
        try:
            return _parse_split(xml, xml_namespace, head_end, parts, chunk_rows)
        except _SplitFailed as e:
            log.debug("parsing in one process: %s", e)
    with gc_paused():
        parser = _Parser(xml, xml_namespace, chunk_rows).run()
        # Rows stay Python tuples only in a short report, for the writer to
        # merge with other short reports; a big report's last rows become
        # Arrow too, which holds them in a fraction of the memory.
        part = parser.part(keep_tail=not parser.batches)
    return _assemble([part], xml_namespace, xml)


SPLIT_MIN_BYTES = 4 * 1024 * 1024
"""Reports at least this large are parsed by several processes at once."""

_split_limit: int | None = None
_spill_dir: str | None = None
_part_hook: Callable[[set[str]], Any] | None = None


def set_part_hook(hook: Callable[[set[str]], Any] | None) -> None:
    """Run ``hook(source IPs of the part)`` in each process of a split parse,
    right after its part is parsed; the results end up, in document order, in
    the report's ``records.part_extras``. ``dmarclens.parallel`` uses it to
    look up each part's IPs in the process that parsed it, while the parse of
    the other part is still running, instead of in a phase of its own."""
    global _part_hook
    _part_hook = hook


def set_spill_dir(directory: str | None) -> None:
    """Write the Arrow batches of reports parsed from now on to files in
    ``directory`` (``dmarclens.spill``) instead of keeping them in memory;
    ``None`` turns it off. The big-report child sets it for its one report."""
    global _spill_dir
    _spill_dir = directory


def set_split_processes(n: int | None) -> None:
    """Cap the processes one report may be split across (``None``: one per
    core). Pool workers set 1: they already keep every core busy."""
    global _split_limit
    _split_limit = n


def split_processes() -> int:
    if _split_limit is not None:
        return max(1, _split_limit)
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:  # not Linux
        return max(1, min(4, os.cpu_count() or 1))


class _SplitFailed(Exception):
    """The report could not be cut into parts; parse it in one piece."""


def _parse_split(xml: bytes, xml_namespace: str | None, head_end: int, n: int, chunk_rows: int) -> Report:
    """Parse one big report in ``n`` processes, each taking a run of records.

    Every part is a complete document: the original text up to the first
    ``<record>`` (root, version, metadata, policy), a run of whole records,
    and the closing root tag. The prescan guarantees that below the root the
    bytes ``<record>`` can only open a record element (no comments, CDATA or
    attributes), and a cut that lands on a nested record makes a part
    malformed, which the part's parse reports; the whole report is then
    parsed in one process. Parts are parsed exactly like a whole report and
    put back together in document order, so the output is the same.
    """
    import multiprocessing

    first = xml.find(b"<record>", head_end)
    if first == -1:
        raise _SplitFailed("no <record> start tag")
    cuts = [first]
    for i in range(1, n):
        cut = xml.find(b"<record>", first + (len(xml) - first) * i // n)
        if cut == -1 or cut <= cuts[-1]:
            break
        cuts.append(cut)
    if len(cuts) < 2:
        raise _SplitFailed("too few records to split")
    bounds = [(cuts[i], cuts[i + 1] if i + 1 < len(cuts) else None) for i in range(len(cuts))]
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError as e:
        raise _SplitFailed("no fork on this platform") from e
    children = []
    for start, stop in bounds[1:]:
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_part_child, args=(xml, first, start, stop, xml_namespace, chunk_rows, sender),
                           daemon=True)
        proc.start()
        sender.close()
        children.append((proc, receiver))
    try:
        with gc_paused():
            own = _parse_part(xml, first, bounds[0][0], bounds[0][1], xml_namespace, chunk_rows)
        outcomes: list[Any] = [own]
        for proc, receiver in children:
            try:
                outcomes.append(receive_pickled(receiver))
            except (EOFError, OSError, pickle.UnpicklingError):
                outcomes.append(_SplitFailed(f"part process exited with {proc.exitcode}"))
    finally:
        for proc, receiver in children:
            receiver.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            # A declined part means the whole report is judged by the
            # one-process parse (and, if it declines too, by parsedmarc).
            raise _SplitFailed(str(outcome))
    return _assemble(outcomes, xml_namespace, xml)


def _parse_part(xml: bytes, first: int, start: int, stop: int | None, xml_namespace: str | None,
                chunk_rows: int) -> _Part:
    """One part: header + records[start:stop] + closing tag, parsed on its own."""
    end = len(xml) if stop is None else stop
    close = b"</feedback>" if stop is not None else b""
    if start == first:
        doc = _Pieces((xml, 0, end), (close, 0, len(close)))
    else:
        doc = _Pieces((xml, 0, first), (xml, start, end), (close, 0, len(close)))
    part = _Parser(doc, xml_namespace, chunk_rows).run().part(keep_tail=stop is None)
    if _part_hook is not None:
        part.extra = _part_hook(part.source_ips())
    return part


class _Pieces:
    """A read-only stream over spans ``(buffer, start, stop)`` of buffers: a
    part of a split report is fed to the parser without copying its megabytes
    into a new string first; a span of a mapped file (``dmarclens.bigfile``)
    is read from the file, never through the map."""

    def __init__(self, *spans: tuple[bytes | Any, int, int]) -> None:
        self._spans = [[buf, start, stop] for buf, start, stop in spans if stop > start]

    def read(self, n: int = -1) -> bytes:
        out: list[bytes] = []
        while self._spans and n != 0:
            span = self._spans[0]
            buf, pos, stop = span
            take = stop - pos if n < 0 else min(n, stop - pos)
            out.append(bigfile.read_at(buf, pos, take))
            span[1] = pos + take
            if pos + take == stop:
                self._spans.pop(0)
            if n > 0:
                n -= take
        return b"".join(out)


def _part_child(xml: bytes, first: int, start: int, stop: int | None, xml_namespace: str | None,
                chunk_rows: int, sender: Any) -> None:
    set_split_processes(1)
    try:
        with gc_paused():
            result: Any = _parse_part(xml, first, start, stop, xml_namespace, chunk_rows)
    except FastPathDeclined as e:
        result = _SplitFailed(f"part declined: {e}")
    except Exception as e:  # noqa: BLE001 - reported to the parent, which parses in one piece
        result = _SplitFailed(f"part failed: {type(e).__name__}: {e}")
    send_pickled(sender, result)
    sender.close()


def send_pickled(sender: Any, obj: Any) -> None:
    """Send ``obj`` down a multiprocessing pipe with out-of-band buffers.

    Arrow data goes straight from its own memory into the pipe instead of
    being copied into one big pickle first, which for a big report would be
    the sending process's memory peak.
    """
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    sender.send(len(buffers))
    sender.send_bytes(payload)
    for buf in buffers:
        sender.send_bytes(buf.raw())


def receive_pickled(receiver: Any) -> Any:
    """The other end of ``send_pickled``."""
    count = receiver.recv()
    payload = receiver.recv_bytes()
    return pickle.loads(payload, buffers=[receiver.recv_bytes() for _ in range(count)])


@dataclass
class _Part:
    """What parsing one document (or one part of a split report) produced."""

    meta: dict[str, Any] | None
    policy: PolicyPublished | None
    version: Any
    begin: datetime | None
    end: datetime | None
    batches: list[Any]
    tail: list[tuple[Any, ...]]
    rows: int
    messages: int
    min_begin: int | None
    max_end: int | None
    min_count: int | None
    max_count: int | None
    texts: set[str] | None
    records: int
    extra: Any = None  # what the part hook returned (see set_part_hook)

    def source_ips(self) -> set[str]:
        return _source_ips(self.tail, self.batches)


def _source_ips(rows: Iterable[tuple[Any, ...]], batches: Iterable[pa.RecordBatch]) -> set[str]:
    """Distinct source IPs of tuple rows and Arrow batches (records column order)."""
    i = ROW_FIELDS.index("source_ip")
    ips = {r[i] for r in rows}
    for b in batches:
        # to_pylist, not Array.unique: that loads pyarrow.compute (~10 MB)
        # into a process that otherwise never needs it.
        ips.update(b.column(ARROW_COLUMNS.index("source_ip")).to_pylist())
    return ips


def _assemble(parts: list[_Part], xml_namespace: str | None, xml: bytes) -> Report:
    """The Report for one or more parts, in document order."""
    head = parts[0]
    missing = FastPathDeclined if len(parts) == 1 else _SplitFailed  # a part may lack what follows its cut
    for part in parts:
        if part.meta is None or part.begin is None or part.end is None:
            raise missing("no <report_metadata>")
        if part.policy is None:
            raise missing("no <policy_published>")
        if (part.meta, part.policy, part.version) != (head.meta, head.policy, head.version):
            raise _SplitFailed("parts disagree on the report metadata")
    if sum(p.records for p in parts) == 0:
        raise FastPathDeclined("no <record>")
    meta, pol = head.meta, head.policy
    assert meta is not None and pol is not None and head.begin is not None and head.end is not None
    begins = [p.min_begin for p in parts if p.min_begin is not None]
    ends = [p.max_end for p in parts if p.max_end is not None]
    begin, end = (_from_micros(min(begins)), _from_micros(max(ends))) if begins else (head.begin, head.end)
    fmt: ReportFormat
    if (xml_namespace == RFC9990_NS or meta["generator"]
            or pol.np is not None or pol.testing is not None or pol.discovery_method is not None):
        fmt = "rfc9990"
    elif is_draft_schema(xml):
        fmt = "draft"
    else:
        fmt = "rfc7489"
    batches: list[Any] | SpilledBatches
    spilled = [p.batches for p in parts if isinstance(p.batches, SpilledBatches)]
    if spilled:  # the parts wrote their batches to files: join the file lists, read nothing
        batches = SpilledBatches(spilled[0].directory)
        for p in parts:
            batches.extend(p.batches)
    else:
        batches = [b for p in parts for b in p.batches]
    records = ColumnarRecords(batches, RowChunk(parts[-1].tail), rows=sum(p.rows for p in parts),
                              messages=sum(p.messages for p in parts))
    records.part_extras = [p.extra for p in parts if p.extra is not None]
    counts_lo = [p.min_count for p in parts if p.min_count is not None]
    counts_hi = [p.max_count for p in parts if p.max_count is not None]
    texts: set[str] | None = set()
    for p in parts:
        texts = None if texts is None or p.texts is None else texts | p.texts
    records.vetted = _Vetted(min(counts_lo) if counts_lo else None, max(counts_hi) if counts_hi else None,
                             frozenset(texts) if texts is not None else None)
    return Report(
        org_name=str(meta["org_name"]).strip(),
        org_email=meta["org_email"],
        org_extra_contact=meta["org_extra_contact"],
        report_id=str(meta["report_id"]).strip(),
        begin=begin,
        end=end,
        policy=pol,
        format=fmt,
        xml_schema=head.version,
        xml_namespace=xml_namespace,
        generator=meta["generator"],
        errors=meta["errors"],
        records=records,
        parser="fast",
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Parsing creates a tuple or two per record and no reference cycles, but
    each allocation burst triggers collections that walk every live object;
    on a 50,000-record report that more than doubles the parse time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Parser:
    """One report's parse state; ``run`` streams the records through it."""

    def __init__(self, xml: bytes | _Pieces, xml_namespace: str | None, chunk_rows: int) -> None:
        if isinstance(xml, bytes):
            self.source: BytesIO | _Pieces = BytesIO(xml)
        elif bigfile.is_mapped(xml):
            self.source = _Pieces((xml, 0, len(xml)))
        else:
            self.source = xml
        self.xml_namespace = xml_namespace
        self.chunk_rows = chunk_rows
        self.meta: dict[str, Any] | None = None
        self.policy: PolicyPublished | None = None
        self.version: Any = _MISSING
        self.q = ""
        self.begin: datetime | None = None
        self.end: datetime | None = None
        self.split = False
        self.whole: tuple[int, int, int] = (0, 0, 0)
        self.rows: list[tuple[Any, ...]] = []
        self.batches: list[pa.RecordBatch] | SpilledBatches = SpilledBatches(_spill_dir) if _spill_dir else []
        self.n_rows = 0
        self.messages = 0
        self.min_begin: int | None = None
        self.max_end: int | None = None
        self.min_count: int | None = None
        self.max_count: int | None = None
        self.texts: set[str] = set()  # every distinct string stored (IPs aside)
        self.texts_complete = True
        self.records_seen = 0

    # ---- driver

    def run(self) -> _Parser:
        from lxml import etree

        try:
            context = etree.iterparse(
                self.source, events=("end", "start-ns", "comment", "pi"),
                tag=tuple("{*}" + t for t in _REPORT_LEVEL),
                encoding="utf-8", resolve_entities=False, no_network=True, huge_tree=False,
                load_dtd=False, dtd_validation=False, remove_comments=False, collect_ids=False,
                remove_blank_text=True,  # whitespace between elements: no text nodes to build or skip
            )
            root = None
            rec_tag = ""
            handle: Any = None
            namespaces = 0
            for event, elem in context:
                if event != "end":
                    if event == "start-ns":
                        namespaces += 1
                    elif elem.getparent() is not None:
                        # xmltodict drops comments and joins the text around
                        # them; rather than mimic that, leave it to parsedmarc.
                        raise FastPathDeclined(f"{event} below the root")
                    continue
                if root is None:
                    root = self._root_of(elem)
                    rec_tag = self.q + "record"
                if elem.getparent() is not root:
                    raise FastPathDeclined(f"<{_local(elem.tag)}> nested below the top level")
                tag = elem.tag
                if tag == rec_tag:
                    if handle is None:
                        if self.meta is None:
                            raise FastPathDeclined("a <record> before <report_metadata>")
                        handle = self._record_handler()
                    self.records_seen += 1
                    handle(elem)
                    elem.clear()
                    while elem.getprevious() is not None:
                        del root[0]
                elif tag == self.q + "report_metadata":
                    if self.meta is not None:
                        raise FastPathDeclined("two <report_metadata>")
                    self._metadata(elem)
                elif tag == self.q + "policy_published":
                    if self.policy is not None:
                        raise FastPathDeclined("two <policy_published>")
                    self._policy(elem)
                elif tag == self.q + "version":
                    if self.version is not _MISSING:
                        raise FastPathDeclined("two <version>")
                    self.version = _leaf_text(elem)
                else:
                    raise FastPathDeclined(f"<{_local(tag)}> in a foreign namespace")
            if root is not None and namespaces != len(root.nsmap):
                # xmltodict would see these declarations as attributes.
                raise FastPathDeclined("namespace declaration below the root")
        except etree.LxmlError as e:
            raise FastPathDeclined(f"XML error: {e}") from e
        except (ValueError, OverflowError, OSError) as e:
            raise FastPathDeclined(f"{type(e).__name__}: {e}") from e
        return self

    def _root_of(self, elem: Any) -> Any:
        root = elem
        while (parent := root.getparent()) is not None:
            root = parent
        if root.prefix is not None or _local(root.tag) != "feedback":
            raise FastPathDeclined("root element is not <feedback>")
        nsmap = root.nsmap
        default = nsmap.get(None)
        if default is not None and any(p is not None and uri == default for p, uri in nsmap.items()):
            raise FastPathDeclined("a prefix bound to the default namespace")
        self.q = "{" + default + "}" if default else ""
        return root

    # ---- report level

    def _metadata(self, elem: Any) -> None:
        q = self.q
        kids = _children(elem, q, _META)
        errors: list[str] = []
        for child in elem:
            if child.tag == q + "error":
                text = _leaf_text(child)
                if text:
                    errors.append(text)
        if "org_name" not in kids or "report_id" not in kids or "date_range" not in kids or "email" not in kids:
            raise FastPathDeclined("report_metadata lacks org_name, email, report_id or date_range")
        email = _leaf_text(kids["email"])
        org = _leaf_text(kids["org_name"])
        if org is None and email is not None:
            org = email.split("@")[-1]
        if org is not None and " " not in org:
            base = base_domain(org)
            if base is not None:
                org = base
        if not org:
            raise FastPathDeclined("no org_name")
        report_id = _leaf_text(kids["report_id"])
        if report_id is None:
            raise FastPathDeclined("empty report_id")
        report_id = report_id.replace("<", "").replace(">", "").split("@")[0]
        dr = _children(kids["date_range"], q, frozenset({"begin", "end"}))
        if "begin" not in dr or "end" not in dr:
            raise FastPathDeclined("date_range lacks begin or end")
        b_text, e_text = _leaf_text(dr["begin"]), _leaf_text(dr["end"])
        if b_text is None or e_text is None:
            raise FastPathDeclined("empty begin or end")
        begin_ts = int(b_text.split(".")[0])
        end_ts = int(e_text.split(".")[0])
        begin, end = report_time(begin_ts), report_time(end_ts)
        if not (1000 <= begin.year <= 9999 and 1000 <= end.year <= 9999):
            raise FastPathDeclined("report dates outside years 1000-9999")
        self.begin, self.end = begin, end
        self.split = (end_ts - begin_ts) > _SPLIT_THRESHOLD_SECONDS
        self.whole = ((begin.date() - _EPOCH).days, _micros(begin), _micros(end))
        self.meta = {
            "org_name": org,
            "org_email": email,
            "org_extra_contact": _leaf_text(kids["extra_contact_info"]) if "extra_contact_info" in kids else None,
            "report_id": report_id,
            "errors": errors,
            "generator": _leaf_text(kids["generator"]) if "generator" in kids else None,
        }
        elem.clear()

    def _policy(self, elem: Any) -> None:
        kids = _children(elem, self.q, _POLICY)
        if "domain" not in kids or "p" not in kids:
            raise FastPathDeclined("policy_published lacks domain or p")
        raw = {name: _leaf_text(child) for name, child in kids.items()}
        domain = _lower(raw["domain"])
        if not domain:
            raise FastPathDeclined("empty policy domain")
        p = raw["p"]
        self.policy = PolicyPublished(
            domain=domain,
            adkim=_lower(raw.get("adkim")) or "r",
            aspf=_lower(raw.get("aspf")) or "r",
            p=_lower(p),
            sp=_lower(raw["sp"] if raw.get("sp") is not None else p),
            np=_lower(raw.get("np")),
            pct=_opt_int(raw.get("pct")),
            fo=raw.get("fo"),
            testing=_lower(raw.get("testing")),
            discovery_method=_lower(raw.get("discovery_method")),
        )
        elem.clear()

    # ---- records

    def _record_handler(self) -> Any:
        """Build the per-record function with every constant bound locally.

        This is the loop that runs 50,000 times for a big report, so it is
        one flat function over local names: no helper calls per element, one
        tuple appended per row, and small caches that map each distinct raw
        text (``"pass"``, a domain...) to its cleaned form once.
        """
        q = self.q
        t_row, t_ids, t_idents, t_auth = q + "row", q + "identifiers", q + "identities", q + "auth_results"
        t_ip, t_count, t_pe = q + "source_ip", q + "count", q + "policy_evaluated"
        t_disp, t_dkim, t_spf, t_reason = q + "disposition", q + "dkim", q + "spf", q + "reason"
        t_hf, t_ef, t_et = q + "header_from", q + "envelope_from", q + "envelope_to"
        t_dom, t_sel, t_scope, t_res = q + "domain", q + "selector", q + "scope", q + "result"
        t_type, t_comment = q + "type", q + "comment"
        missing = _MISSING
        declined = FastPathDeclined
        inet_pton, af4, af6 = socket.inet_pton, socket.AF_INET, socket.AF_INET6
        split = self.split
        begin, end = self.begin, self.end
        day0, begin0, end0 = self.whole
        split_cache: dict[int, list[tuple[int, int, int, int]]] = {}
        limit = self.chunk_rows
        flush = self._flush
        parser = self

        # raw element text → cleaned value, computed once per distinct text
        words: dict[str | None, tuple[str | None, bool]] = {}
        low: dict[str | None, str | None] = {None: None}
        low_hdr: dict[str | None, str | None] = {None: None}
        selectors: dict[str | None, str] = {None: "none"}

        texts = self.texts

        def note(value: Any) -> None:
            # Remember each distinct stored string (a handful per report), so
            # ColumnarRecords.needs_repair can vet them without a row scan.
            if isinstance(value, tuple):
                value = value[0]
            if value is not None:
                if len(texts) < 200_000:
                    texts.add(value)
                else:
                    parser.texts_complete = False

        def word(raw: str | None) -> tuple[str | None, bool]:
            hit = words.get(raw)
            if hit is None:
                text = raw.strip() if raw is not None else None
                if not text:
                    hit = (None, False)
                else:
                    lowered = text.lower()
                    hit = (_lower(lowered), lowered == "pass")
                if len(words) < 10_000:
                    words[raw] = hit
                note(hit)
            return hit

        def lowered(raw: str | None) -> str | None:
            hit = low.get(raw, missing)
            if hit is missing:
                text = raw.strip() if raw is not None else None
                hit = _lower(text) if text else None
                if len(low) < 100_000:
                    low[raw] = hit
                note(hit)
            return hit

        def lowered_twice(raw: str | None) -> str | None:
            # parsedmarc lower-cases header_from (and the backfilled
            # envelope_from) before parse.normalize lower-cases again.
            hit = low_hdr.get(raw, missing)
            if hit is missing:
                text = raw.strip() if raw is not None else None
                hit = _lower(text.lower()) if text else None
                if len(low_hdr) < 100_000:
                    low_hdr[raw] = hit
                note(hit)
            return hit

        def selector(raw: str | None) -> str:
            hit = selectors.get(raw)
            if hit is None:
                hit = (raw.strip() or "none") if raw is not None else "none"
                if len(selectors) < 100_000:
                    selectors[raw] = hit
                note(hit)
            return hit

        results: dict[tuple[Any, ...], tuple[Any, ...]] = {}

        def shared(entries: tuple[Any, ...]) -> tuple[Any, ...]:
            # Most records repeat one of a few DKIM/SPF result sets; keeping
            # one copy of each keeps a 20,000-row chunk a few MB.
            hit = results.get(entries)
            if hit is None:
                if len(results) < 50_000:
                    results[entries] = entries
                return entries
            return hit

        def reason(elem: Any) -> tuple[str | None, str | None]:
            if not len(elem):
                raise declined("a <reason> without child elements (parsedmarc drops the record)")
            rtype = comment = missing
            for child in elem:
                tag = child.tag
                if tag == t_type:
                    if rtype is not missing or len(child):
                        raise declined("repeated or nested <type> in a reason")
                    rtype = child.text
                elif tag == t_comment:
                    if comment is not missing or len(child):
                        raise declined("repeated or nested <comment> in a reason")
                    comment = child.text
            comment = comment.strip() or None if isinstance(comment, str) else None
            note(comment)
            return (lowered(rtype) if rtype is not missing else None, comment)

        def handle(rec: Any) -> None:
            row = ids = idents = auth = None
            for child in rec:
                tag = child.tag
                if tag == t_row:
                    if row is not None:
                        raise declined("two <row> in a record")
                    row = child
                elif tag == t_ids:
                    if ids is not None:
                        raise declined("two <identifiers> in a record")
                    ids = child
                elif tag == t_auth:
                    if auth is not None:
                        raise declined("two <auth_results> in a record")
                    auth = child
                elif tag == t_idents:
                    if idents is not None:
                        raise declined("two <identities> in a record")
                    idents = child
            if row is None:
                raise declined("no <row>")

            ip = count = pe = missing
            for child in row:
                tag = child.tag
                if tag == t_ip:
                    if ip is not missing or len(child):
                        raise declined("repeated or nested <source_ip>")
                    ip = child.text
                elif tag == t_count:
                    if count is not missing or len(child):
                        raise declined("repeated or nested <count>")
                    count = child.text
                elif tag == t_pe:
                    if pe is not missing:
                        raise declined("two <policy_evaluated>")
                    pe = child
            if ip is missing or count is missing or pe is missing:
                raise declined("row lacks source_ip, count or policy_evaluated")
            if ip is not None:
                ip = ip.strip()
            if not ip:
                raise declined("Source IP address is empty")
            try:
                if ":" in ip:
                    inet_pton(af6, ip)
                    ip = ip.lower()
                else:
                    inet_pton(af4, ip)
            except OSError:
                raise declined(f"source IP {ip[:60]!r} is not plain IPv4/IPv6 text") from None
            if count is None:
                raise declined("empty count")
            try:
                count = int(count)
            except ValueError as e:
                raise declined(str(e)) from None

            disp = pdkim = pspf = missing
            reasons: Any = ()
            for child in pe:
                tag = child.tag
                if tag == t_disp:
                    if disp is not missing or len(child):
                        raise declined("repeated or nested <disposition>")
                    disp = child.text
                elif tag == t_dkim:
                    if pdkim is not missing or len(child):
                        raise declined("repeated or nested <dkim> in policy_evaluated")
                    pdkim = child.text
                elif tag == t_spf:
                    if pspf is not missing or len(child):
                        raise declined("repeated or nested <spf> in policy_evaluated")
                    pspf = child.text
                elif tag == t_reason:
                    reasons = (*reasons, reason(child))
            if pdkim is missing or pspf is missing:
                raise declined("policy_evaluated lacks dkim or spf")
            disposition = (word(disp)[0] if disp is not missing else None) or "none"
            pdkim, dkim_aligned = word(pdkim)
            pspf, spf_aligned = word(pspf)

            id_elem = idents if idents is not None else ids
            if id_elem is None:
                raise declined("no <identifiers>")
            header = env_from = env_to = missing
            for child in id_elem:
                tag = child.tag
                if tag == t_hf:
                    if header is not missing or len(child):
                        raise declined("repeated or nested <header_from>")
                    header = child.text
                elif tag == t_ef:
                    if env_from is not missing or len(child):
                        raise declined("repeated or nested <envelope_from>")
                    env_from = child.text
                elif tag == t_et:
                    if env_to is not missing or len(child):
                        raise declined("repeated or nested <envelope_to>")
                    env_to = child.text
            if header is missing:
                raise declined("identifiers lack header_from")

            if auth is None:
                raise declined("no <auth_results>")
            dkims: list[tuple[str | None, str, str | None]] = []
            spfs: list[tuple[str | None, str | None, str | None]] = []
            last_spf: Any = None
            for child in auth:
                tag = child.tag
                if tag == t_dkim:
                    is_dkim = True
                elif tag == t_spf:
                    is_dkim = False
                else:
                    continue
                if not len(child):
                    # xmltodict makes this None or a string; parsedmarc fails
                    # on None and on a string containing "domain", and skips
                    # any other string.
                    text = child.text.strip() if child.text else ""
                    if not text or "domain" in text:
                        raise declined("an empty or text-only DKIM/SPF result")
                    if not is_dkim:
                        last_spf = None
                    continue
                dom = sel = res = missing
                third = t_sel if is_dkim else t_scope
                for leaf in child:
                    tag = leaf.tag
                    if tag == t_dom:
                        if dom is not missing or len(leaf):
                            raise declined("repeated or nested <domain> in an auth result")
                        dom = leaf.text
                    elif tag == t_res:
                        if res is not missing or len(leaf):
                            raise declined("repeated or nested <result> in an auth result")
                        res = leaf.text
                    elif tag == third:
                        if sel is not missing or len(leaf):
                            raise declined("repeated or nested <selector>/<scope> in an auth result")
                        sel = leaf.text
                if dom is missing:
                    if not is_dkim:
                        last_spf = None
                    continue
                domain = lowered(dom)
                if not is_dkim:
                    last_spf = dom
                if domain is None:
                    continue
                result = word(res)[0] if res is not missing else None
                if is_dkim:
                    dkims.append((domain, selector(sel if sel is not missing else None), result or "none"))
                else:
                    scope = lowered(sel) if sel is not missing else None
                    spfs.append((domain, scope or "mfrom", result or "none"))

            if env_from is missing or env_from is None or not env_from.strip():
                envelope_from = lowered_twice(last_spf)
            else:
                envelope_from = lowered(env_from)
            values = (
                ip, count, disposition, pdkim or "fail", pspf or "fail", dkim_aligned, spf_aligned,
                dkim_aligned or spf_aligned, lowered_twice(header),
                envelope_from, lowered(env_to) if env_to is not missing else None,
                reasons, shared(tuple(dkims)), shared(tuple(spfs)),
            )
            rows = parser.rows
            if split:
                parts = split_cache.get(count)
                if parts is None:
                    parts = split_cache[count] = [
                        ((lo.date() - _EPOCH).days, _micros(lo), _micros(hi), n)
                        for lo, hi, n in day_split(begin, end, count)
                    ]
                for d, b, e, n in parts:
                    rows.append((d, b, e, ip, n, *values[2:]))
            else:
                rows.append((day0, begin0, end0, *values))
            if len(rows) >= limit:
                flush()

        return handle

    def _flush(self) -> None:
        """Turn the rows gathered so far into an Arrow batch (and free them)."""
        rows = self.rows
        if not rows:
            return
        self._account(rows)
        self.batches.append(RowChunk(rows).to_arrow())
        self.rows = []

    def _account(self, rows: list[tuple[Any, ...]]) -> None:
        self.n_rows += len(rows)
        counts = [r[4] for r in rows]
        self.messages += sum(counts)
        lo_count, hi_count = min(counts), max(counts)
        self.min_count = lo_count if self.min_count is None else min(lo_count, self.min_count)
        self.max_count = hi_count if self.max_count is None else max(hi_count, self.max_count)
        lo = min(r[1] for r in rows)
        hi = max(r[2] for r in rows)
        self.min_begin = lo if self.min_begin is None else min(lo, self.min_begin)
        self.max_end = hi if self.max_end is None else max(hi, self.max_end)

    # ---- result

    def part(self, *, keep_tail: bool) -> _Part:
        """The parse state as a ``_Part``; the unconverted rows stay Python
        tuples only if ``keep_tail`` (the last part), else become Arrow."""
        if self.rows:
            self._account(self.rows)
            if not keep_tail:
                self.batches.append(RowChunk(self.rows).to_arrow())
                self.rows = []
        return _Part(
            meta=self.meta, policy=self.policy, version="draft" if self.version is _MISSING else self.version,
            begin=self.begin, end=self.end,
            batches=self.batches, tail=self.rows, rows=self.n_rows, messages=self.messages,
            min_begin=self.min_begin, max_end=self.max_end, min_count=self.min_count, max_count=self.max_count,
            texts=self.texts if self.texts_complete else None, records=self.records_seen,
        )


def _opt_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
