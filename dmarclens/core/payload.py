"""Report payload decoding: gzip and zip undone within a size budget.

Sources (zip archives, mail attachments) and the parser both undo
compression, so the rules live below both: every inflation is bounded
(``MAX_REPORT_BYTES``), counted in 1 MB chunks before anything is kept, and
can go into an unnamed file that is mapped instead of held in memory
(``dmarclens.core.bigfile``).
"""
from __future__ import annotations

import io
import logging
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dmarclens.core import bigfile
from dmarclens.core.errors import ReportParseError

log = logging.getLogger(__name__)


MAX_REPORT_BYTES = 256 * 1024 * 1024
"""Largest decompressed report we accept. Real reports from the biggest
receivers are tens of MB; anything far past that is a bomb, not a report."""


MAX_RECORDS = 500_000
"""Records one report may hold. The biggest receivers send tens of thousands;
a million-record "report" is a resource attack (database bloat), not data."""


_GZIP_MAGIC = b"\x1f\x8b"


_ZIP_MAGIC = b"PK\x03\x04"


# C0/C1 controls, zero-width and bidi-override characters: they corrupt logs and
# terminals (ANSI escapes) or make a name display as something else (U+202E).
UNSAFE_CHARS_RE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def decompress(data: bigfile.Buffer, *, limit: int = MAX_REPORT_BYTES, inflate_dir: str | None = None
               ) -> bigfile.Buffer:
    """Undo gzip or single-member zip compression, refusing to inflate past ``limit``.

    ``inflate_dir``: inflate into an unnamed file there and return a read-only
    map of it (``dmarclens.core.bigfile``) instead of ``bytes``, so a 130 MB report
    delivered as 4 MB of gzip is never held in memory either.
    """
    magic = data[:4]  # a slice, not startswith: ``data`` may be a mapped file (dmarclens.core.bigfile)
    if magic.startswith(_GZIP_MAGIC):
        if inflate_dir is not None:
            return _gunzip_to_map(data, limit=limit, directory=inflate_dir)
        return gunzip_bounded(data, limit=limit)
    if magic.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = [i for i in zf.infolist() if not i.is_dir()]
                if not names:
                    raise ReportParseError("zip archive is empty")
                if len(names) > 1:
                    raise ReportParseError(
                        f"zip archive holds {len(names)} files; expected one report"
                    )
                return read_zip_member(zf, names[0], limit=limit, inflate_dir=inflate_dir)
        except zipfile.BadZipFile as e:
            raise ReportParseError(f"corrupt zip archive: {e}") from e
    return data


_SCAN_CHUNK = 1024 * 1024


_RECORD_MARK = b"<record"


def _scan_inflated(chunks: Iterable[bytes], *, limit: int, what: str,
                   sink: Callable[[bytes], Any] | None = None) -> int:
    """Size of a stream's inflated output, counted without keeping it (or
    written to ``sink`` as it comes).

    Why a counting pass before the real one: inflating straight into memory
    holds up to twice the output (zlib grows its buffer), so a bomb would cost
    512 MB before being refused. Counting in 1 MB chunks costs 1 MB, refuses
    bombs and million-record reports on the way, and lets the real pass
    allocate the exact size once. Inflating into a file needs no second pass.
    """
    total = records = 0
    prev = b""
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise ReportParseError(f"{what} expands past {limit // (1024 * 1024)} MB; refused as a bomb")
        if sink is not None:
            sink(chunk)
        records += chunk.count(_RECORD_MARK) + (prev[-6:] + chunk[:6]).count(_RECORD_MARK)
        prev = chunk
    if records > MAX_RECORDS:
        raise ReportParseError(
            f"invalid aggregate report: {records:,} records in one report (limit {MAX_RECORDS:,}); "
            "no receiver sends that many, refused as a resource attack"
        )
    return total


def _gunzip_chunks(data: bigfile.Buffer, d: Any) -> Iterator[bytes]:
    buf = data
    while not d.eof:
        out = d.decompress(buf, _SCAN_CHUNK)
        buf = d.unconsumed_tail
        if out:
            yield out
        elif not buf:
            return


def gunzip_bounded(data: bigfile.Buffer, *, limit: int = MAX_REPORT_BYTES) -> bytes:
    d = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        size = _scan_inflated(_gunzip_chunks(data, d), limit=limit, what="gzip")
        if not d.eof:
            raise ReportParseError("truncated gzip data (stream ends early)")
        return zlib.decompress(data, zlib.MAX_WBITS | 16, size + 1)
    except zlib.error as e:
        raise ReportParseError(f"corrupt gzip data: {e}") from e


def _spool(chunks: Iterable[bytes], *, limit: int, what: str, directory: str) -> bigfile.Buffer | None:
    """Inflated ``chunks`` in an unnamed file in ``directory``, returned mapped
    (``dmarclens.core.bigfile``), with ``_scan_inflated``'s checks on the way; None
    when nothing can be written there (no room, no right): the caller then
    inflates into memory as usual."""
    try:
        with tempfile.TemporaryFile(dir=directory) as fh:
            return bigfile.map_spooled(fh, _scan_inflated(chunks, limit=limit, what=what, sink=fh.write))
    except OSError as e:
        log.debug("cannot inflate %s into %s (%s); inflating in memory", what, directory, e)
        return None


def _gunzip_to_map(data: bigfile.Buffer, *, limit: int, directory: str) -> bigfile.Buffer:
    """``gunzip_bounded`` into an unnamed file, returned mapped (same checks, same errors)."""
    d = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        out = _spool(_gunzip_chunks(data, d), limit=limit, what="gzip", directory=directory)
    except zlib.error as e:
        raise ReportParseError(f"corrupt gzip data: {e}") from e
    if out is None:
        return gunzip_bounded(data, limit=limit)
    if not d.eof:
        raise ReportParseError("truncated gzip data (stream ends early)")
    return out


def read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, limit: int = MAX_REPORT_BYTES,
                    inflate_dir: str | None = None) -> bigfile.Buffer:
    """One member's bytes, refusing bombs; with ``inflate_dir``, a member of
    ``bigfile.MAP_MIN_BYTES`` or more is inflated into an unnamed file there
    and returned mapped (see ``decompress``)."""
    if info.file_size > limit:
        raise ReportParseError(
            f"zip member {info.filename!r} expands to {info.file_size} bytes; refused as a bomb"
        )
    if inflate_dir is not None and info.file_size >= bigfile.MAP_MIN_BYTES:
        try:
            with zf.open(info) as fh:
                out = _spool(iter(lambda: fh.read(_SCAN_CHUNK), b""), limit=limit,
                             what=f"zip member {info.filename!r}", directory=inflate_dir)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
            raise ReportParseError(f"corrupt zip member {info.filename!r}: {e}") from e
        if out is not None:
            return out
    try:
        # Counting pass first (see _scan_inflated): a header that lies about the
        # size is caught by the CRC check at the end of it, holding 1 MB.
        with zf.open(info) as fh:
            _scan_inflated(iter(lambda: fh.read(_SCAN_CHUNK), b""), limit=limit,
                           what=f"zip member {info.filename!r}")
        with zf.open(info) as fh:
            out = fh.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise ReportParseError(f"corrupt zip member {info.filename!r}: {e}") from e
    if len(out) > limit:
        raise ReportParseError(f"zip member {info.filename!r} expands past the limit; refused as a bomb")
    return out


def unsafe_member_name(name: str) -> str | None:
    """Why an archive member name is refused, or None when it is fine.

    dmarclens never extracts members to disk, so a name like ``../../etc/x``
    cannot escape anywhere here; but no receiver writes such names, only a
    crafted archive does, and the name would travel on into logs and exports.
    """
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
        return f"zip member name {name[:120]!r} is a path traversal (absolute or ..); refused"
    if UNSAFE_CHARS_RE.search(name):
        return f"zip member name {name[:120]!r} holds control characters; refused"
    return None
