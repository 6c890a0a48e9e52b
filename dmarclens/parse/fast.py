"""The streaming parser's entry point: one report parsed in one process, or
cut at ``<record>`` boundaries and parsed by several forked processes.

A big report (``SPLIT_MIN_BYTES`` or more) is cut into parts that are each a
complete document; the parts are parsed exactly like a whole report and put
back together in document order, so the output is the same either way
(``tests/perf``).
"""
from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable
from typing import Any

from dmarclens.core import bigfile
from dmarclens.core.arrow import gc_paused
from dmarclens.core.models import Report, ReportFormat
from dmarclens.core.pipes import receive_pickled, send_pickled
from dmarclens.core.records import CHUNK_ROWS, ColumnarRecords, RowChunk, Vetted, from_micros
from dmarclens.core.spill import SpilledBatches
from dmarclens.parse.formats import RFC9990_NS, is_draft_schema
from dmarclens.parse.stream import FastPathDeclined, Parser, Part, Pieces, prescan

log = logging.getLogger(__name__)


def parse_aggregate_fast(xml: bigfile.Buffer, *, chunk_rows: int = CHUNK_ROWS) -> Report:
    """Parse aggregate-report XML into a ``Report``.

    ``xml`` is the decompressed report after ``parse.formats.prepare_aggregate_xml``
    (the clean-ups both parsers get). Raises ``FastPathDeclined`` for anything
    parsedmarc should judge instead: a record parsedmarc would skip, a report
    it would reject (its messages stay the reference), any unusual syntax.
    """
    head_end, xml_namespace = prescan(xml)
    parts = split_processes() if len(xml) >= SPLIT_MIN_BYTES else 1
    if parts > 1:
        try:
            return _parse_split(xml, xml_namespace, head_end, parts, chunk_rows)
        except _SplitFailed as e:
            log.debug("parsing in one process: %s", e)
    with gc_paused():
        parser = Parser(xml, xml_namespace, chunk_rows).run()
        # Rows stay Python tuples only in a short report, for the writer to
        # merge with other short reports; a big report's last rows become
        # Arrow too, which holds them in a fraction of the memory.
        part = parser.part(keep_tail=not parser.batches)
    return _assemble([part], xml_namespace, xml)


SPLIT_MIN_BYTES = 4 * 1024 * 1024
"""Reports at least this large are parsed by several processes at once."""


_split_limit: int | None = None


_part_hook: Callable[[set[str]], Any] | None = None


def set_part_hook(hook: Callable[[set[str]], Any] | None) -> None:
    """Run ``hook(source IPs of the part)`` in each process of a split parse,
    right after its part is parsed; the results end up, in document order, in
    the report's ``records.part_extras``. ``dmarclens.ingest.pool`` uses it to
    look up each part's IPs in the process that parsed it, while the parse of
    the other part is still running, instead of in a phase of its own."""
    global _part_hook
    _part_hook = hook


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


def _parse_split(xml: bigfile.Buffer, xml_namespace: str | None, head_end: int, n: int, chunk_rows: int) -> Report:
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


def _parse_part(xml: bigfile.Buffer, first: int, start: int, stop: int | None, xml_namespace: str | None,
                chunk_rows: int) -> Part:
    """One part: header + records[start:stop] + closing tag, parsed on its own."""
    end = len(xml) if stop is None else stop
    close = b"</feedback>" if stop is not None else b""
    if start == first:
        doc = Pieces((xml, 0, end), (close, 0, len(close)))
    else:
        doc = Pieces((xml, 0, first), (xml, start, end), (close, 0, len(close)))
    part = Parser(doc, xml_namespace, chunk_rows).run().part(keep_tail=stop is None)
    if _part_hook is not None:
        part.extra = _part_hook(part.source_ips())
    return part


def _part_child(xml: bigfile.Buffer, first: int, start: int, stop: int | None, xml_namespace: str | None,
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


def _assemble(parts: list[Part], xml_namespace: str | None, xml: bigfile.Buffer) -> Report:
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
    begin, end = (from_micros(min(begins)), from_micros(max(ends))) if begins else (head.begin, head.end)
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
    records.vetted = Vetted(min(counts_lo) if counts_lo else None, max(counts_hi) if counts_hi else None,
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
