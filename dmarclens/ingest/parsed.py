"""One item's parse step of an ingest: RawItem → ``Parsed`` (a report, another
report kind, or the reason it failed), the same in-process and in a worker.

Pure: bytes in, parsed report or reason out, no database; so it runs
unchanged in the pool's worker processes (``ingest.pool``), the big-report
child and the writer's own process (``ingest.writer``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dmarclens.core.errors import ReportParseError
from dmarclens.core.models import ItemResult, ParsedItem, RawItem
from dmarclens.parse.report import parse_payload
from dmarclens.store import write


@dataclass
class Parsed:
    """A RawItem after parsing: either a ParsedItem or the reason it failed."""

    raw: RawItem
    item: ParsedItem | None = None
    error: str | None = None
    sha256: str | None = None  # of the raw bytes, kept after they are dropped
    size_bytes: int | None = None
    raw_gz: bytes | None = None  # the report XML gzipped for report_raw (see pack_xml)
    raw_sha256: str | None = None  # of the report XML
    ip_facts: Any = None  # Arrow table(s) of offline IP facts, when a parse worker looked them up
    key: str | None = None  # report.key (a sha256), computed once where the report was parsed


def parse_raw(raw: RawItem, *, pack: bool = True, digest: bool = True) -> Parsed:
    """Pure: bytes in, parsed report or reason out. Safe to run in a worker process.

    The raw bytes are dropped once parsed (their hash and size are kept): a
    batch holds up to hundreds of items until its commit, and keeping every
    zip member or mail part alive until then would let one hostile archive
    hold gigabytes. ``pack=False`` leaves the report XML for the caller to
    ``pack_xml`` (``dmarclens.ingest.pool`` does it on a thread next to other work);
    ``digest=False`` leaves ``sha256`` and ``size_bytes`` to the caller, which
    hashes the bytes there.
    """
    parsed = _parse(raw)
    if parsed.item is not None and parsed.item.report is not None:
        parsed.key = parsed.item.report.key
    if raw.data:
        if digest:
            parsed.sha256, parsed.size_bytes = raw.sha256, len(raw.data)
        parsed.raw = dataclasses.replace(raw, data=b"")
    if pack and parsed.item is not None and parsed.item.raw_xml is not None:
        same = parsed.item.raw_xml is raw.data  # an uncompressed file: its hash is known
        pack_xml(parsed, sha256=parsed.sha256 if same else None)
    return parsed


def pack_xml(parsed: Parsed, *, sha256: str | None = None) -> None:
    """Swap the report XML for its gzip and hash, made where it was parsed.

    In a worker process this moves the compression off the single writer and
    sends a few MB back instead of the whole XML; in any process it keeps a
    30 MB report from staying in memory until its batch commits.
    """
    assert parsed.item is not None and parsed.item.raw_xml is not None
    xml = parsed.item.raw_xml
    parsed.raw_sha256, parsed.raw_gz = write.hash_and_gzip(xml, sha256=sha256)
    parsed.item = dataclasses.replace(parsed.item, raw_xml=None)


def _parse(raw: RawItem) -> Parsed:
    if raw.problem:
        return Parsed(raw, error=raw.problem)
    if raw.kind_hint == "failure":
        return Parsed(raw, item=ParsedItem(kind="failure", summary="DMARC failure (RUF) report"))
    try:
        return Parsed(raw, item=parse_payload(raw.data, fallback_org=raw.mail_from_domain))
    except ReportParseError as e:
        return Parsed(raw, error=str(e))
    except RecursionError:
        return Parsed(raw, error="XML nests too deeply")
    except MemoryError:
        return Parsed(raw, error="report too large to parse in memory")


def base_result(raw: RawItem, *, sha256: str | None = None, size_bytes: int | None = None) -> ItemResult:
    return ItemResult(
        origin=raw.origin, origin_kind=raw.origin_kind, outcome="rejected", member=raw.member,
        sha256=raw.sha256 if raw.data else sha256, size_bytes=len(raw.data) if raw.data else size_bytes,
        mailbox=raw.mailbox, uidvalidity=raw.uidvalidity, uid=raw.uid, message_id=raw.message_id,
    )
