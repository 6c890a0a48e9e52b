"""Big report files kept out of memory: a read-only map for looking around,
reads of one window at a time for every pass over the whole text.

Why: a 200,000-record report is 130 MB of XML. Read into memory, those bytes
sit in the process that parses them for the whole parse, so peak memory grows
with the report. Here the file stays in the page cache: the parser and the
checks look at its head, its tail or one record through a read-only memory
map (a few pages), and every pass over the whole document (the byte checks,
the parse itself, the hash and the gzip for ``report_raw``) reads it with
``preadv`` into one reused 8 MB buffer, a window at a time. So the process's
resident memory stays flat however big the file, and a pass costs a copy out
of the page cache, not a page fault per page (mapped pages handed back after
each pass faulted in again on the next, which made the checks 2-3x slower).

Every helper here also takes plain ``bytes`` and then does exactly what the
one-line ``bytes`` method would: callers write one code path, and what a
mapped document is checked for is by construction what an in-memory one is.

Only the process that parses maps a file (``dmarclens.ingest.pool`` hands a big
file to a forked child that way): a file truncated while mapped kills the
reader with SIGBUS, which the writer survives and answers by reading the
file again (``reread``).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import weakref
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeAlias, TypeGuard

Buffer: TypeAlias = "bytes | mmap.mmap"

WINDOW = 8 * 1024 * 1024
"""Bytes of a mapped document read per step of a pass (the buffer's size)."""

MAP_MIN_BYTES = 4 * 1024 * 1024
"""Files at least this large are mapped when the caller asks for it."""

_PAGE = mmap.PAGESIZE
_RECORD = b"<record"
_NOT_SPACE = re.compile(rb"[^ \t\n\r\x0b\x0c]")  # what bytes.isspace() counts as space


class FileMap(mmap.mmap):
    """A read-only map that knows which named file it maps (``path``; None for
    an unnamed temporary file holding an inflated report), with a descriptor
    of its own (``fd``) for the window reads. Only a named file can change
    under the map, so only it is ever read again (``reread``)."""

    path: str | None = None
    fd: int = -1


def map_file(fh: BinaryIO, path: str | None = None) -> FileMap:
    """A read-only map of an open file (``fh`` has ``fileno()``); ``path``:
    the file's name when it is the user's file, not a temporary one.

    Raises OSError (a filesystem that cannot map, such as some FUSE mounts)
    or ValueError (an empty file): callers read the file instead.
    """
    fileno = fh.fileno()
    mm = FileMap(fileno, 0, access=mmap.ACCESS_READ)
    mm.path = path
    if hasattr(os, "pread"):
        mm.fd = os.dup(fileno)  # the map outlives ``fh``; so must the descriptor for pread
        weakref.finalize(mm, os.close, mm.fd)
    return mm


def map_spooled(fh: BinaryIO, size: int) -> Buffer:
    """A map of a file just written through ``fh`` (``b""`` when it is empty:
    an empty file cannot be mapped)."""
    if size == 0:
        return b""
    fh.flush()
    return map_file(fh)


def expanded_size(data: Buffer) -> int:
    """The size of what ``data`` inflates to, as its container states it: a
    gzip's trailer (mod 4 GiB) or a zip's directory, else ``len(data)``.

    Only to decide where an item is parsed: a lie costs memory, never safety,
    since every inflation is bounded again while it runs.
    """
    head = data[:4]
    if head[:2] == b"\x1f\x8b" and len(data) >= 18:
        return int.from_bytes(data[-4:], "little")
    if head == b"PK\x03\x04":
        import io
        import zipfile

        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                return sum(i.file_size for i in zf.infolist())
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            return len(data)
    return len(data)


def is_mapped(buf: object) -> TypeGuard[mmap.mmap]:
    return isinstance(buf, mmap.mmap)


def release(buf: Buffer, start: int, stop: int) -> None:
    """Hand the pages of ``buf[start:stop]`` back (a no-op for ``bytes``).

    Safe while other threads or processes read the same map: the pages stay
    in the page cache and a later read faults them in again.
    """
    if not isinstance(buf, mmap.mmap) or stop <= start or not hasattr(mmap, "MADV_DONTNEED"):
        return
    first = start - start % _PAGE
    stop = min(stop, len(buf))
    if stop > first:
        with contextlib.suppress(OSError, ValueError):  # only memory is at stake, never the data
            buf.madvise(mmap.MADV_DONTNEED, first, stop - first)


def release_all(buf: Buffer) -> None:
    release(buf, 0, len(buf))


def _reader(buf: mmap.mmap) -> Callable[[int, int], tuple[bytes | bytearray, int]]:
    """``read(offset, size) -> (buffer, length)``: the bytes ``buf[offset:offset
    + size]`` as the first ``length`` bytes of ``buffer``, read with ``preadv``
    into one buffer reused by every call (without ``pread``, a slice of the
    map, whose pages are handed back after)."""
    fd = getattr(buf, "fd", -1)
    n = len(buf)
    if fd < 0:
        def sliced(offset: int, size: int) -> tuple[bytes | bytearray, int]:
            piece = buf[offset: offset + size]
            release(buf, offset, offset + size)
            return piece, len(piece)

        return sliced
    scratch = [bytearray(0)]
    preadv = getattr(os, "preadv", None)

    def read(offset: int, size: int) -> tuple[bytes | bytearray, int]:
        size = max(0, min(size, n - offset))
        if preadv is None:
            piece = os.pread(fd, size, offset)
            return piece, len(piece)
        if len(scratch[0]) < size:
            scratch[0] = bytearray(size)
        view = memoryview(scratch[0])
        got = 0
        while got < size:  # a short read only at the end of a file that shrank
            step = preadv(fd, [view[got:size]], offset + got)
            if step <= 0:
                break
            got += step
        return scratch[0], got

    return read


def blank(buf: Buffer) -> bool:
    """``buf.isspace()``: true when every byte is whitespace (and there is one)."""
    if not isinstance(buf, mmap.mmap):
        return buf.isspace()
    read = _reader(buf)
    for s in range(0, len(buf), WINDOW):
        piece, got = read(s, WINDOW)
        if _NOT_SPACE.search(piece, 0, got):
            return False
    return len(buf) > 0


_FIRST_READ = 64 * 1024
"""The first read of a search: what is looked for is usually near where the
search starts (the next record, the first ``<reason``)."""


def find(buf: Buffer, needle: bytes, start: int = 0) -> int:
    """``buf.find(needle, start)``."""
    if not isinstance(buf, mmap.mmap):
        return buf.find(needle, start)
    read = _reader(buf)
    s, step = max(0, start), _FIRST_READ
    while s < len(buf):
        piece, got = read(s, step + len(needle) - 1)
        i = piece.find(needle, 0, got)
        if i != -1:
            return s + i
        s, step = s + step, WINDOW
    return -1


def contains(buf: Buffer, needle: bytes) -> bool:
    """``needle in buf``."""
    return find(buf, needle) != -1


def count(buf: Buffer, needle: bytes) -> int:
    """``buf.count(needle)`` for a needle that cannot overlap itself (``b"record"``)."""
    if not isinstance(buf, mmap.mmap):
        return buf.count(needle)
    read = _reader(buf)
    total = 0
    for s in range(0, len(buf), WINDOW):
        # An occurrence starting in this window ends within the extra
        # len(needle) - 1 bytes; one starting in the next does not fit.
        piece, got = read(s, WINDOW + len(needle) - 1)
        total += piece.count(needle, 0, got)
    return total


def first_span_without(buf: Buffer, needle: bytes, span: int) -> int:
    """The start of the first whole ``span`` (at a multiple of ``span``) that
    does not contain ``needle``, or -1: ``parse.guards.precheck_xml``'s test for a
    text run of ``MAX_TEXT_RUN`` bytes without markup."""
    n = len(buf)
    if not isinstance(buf, mmap.mmap):
        for start in range(0, n, span):
            if n - start >= span and buf.find(needle, start, start + span) == -1:
                return start
        return -1
    read = _reader(buf)
    for s in range(0, n - span + 1, span):
        # Markup is usually in a span's first bytes: read the rest only if not.
        piece, got = read(s, min(span, _FIRST_READ))
        if piece.find(needle, 0, got) == -1 and find(buf, needle, s) not in range(s, s + span):
            return s
    return -1


def _cut_windows(buf: mmap.mmap, start: int) -> Iterator[tuple[bytes | bytearray, int]]:
    """``pieces`` as (buffer, length) pairs read into one reused buffer."""
    n = len(buf)
    read = _reader(buf)
    s = start
    while s < n:
        cut = find(buf, _RECORD, s + WINDOW) if s + WINDOW < n else -1  # usually within its first read
        stop = n if cut == -1 else cut
        yield read(s, stop - s)
        s = stop


def pieces(buf: mmap.mmap, start: int = 0) -> Iterator[bytes]:
    """The document from ``start`` on, in windows cut just before a ``<record``.

    Why there: a regular expression looking for something inside an element
    (an attribute, an empty ``<reason>``, an ``<identities>`` tag) never spans
    the start of a new record, so a match is never cut in two. A document with
    no further ``<record`` is one window to its end.
    """
    for piece, got in _cut_windows(buf, start):
        yield bytes(piece[:got])


def search(pattern: re.Pattern[bytes], buf: Buffer, start: int = 0) -> bool:
    """Whether ``pattern.search(buf, start)`` matches, for patterns whose
    matches cannot contain ``<record`` (see ``pieces``)."""
    if not isinstance(buf, mmap.mmap):
        return pattern.search(buf, start) is not None
    return any(pattern.search(piece, 0, got) is not None for piece, got in _cut_windows(buf, start))


def count_matches(pattern: re.Pattern[bytes], buf: Buffer) -> int:
    """``len(pattern.findall(buf))`` without the list, for the same patterns."""
    if not isinstance(buf, mmap.mmap):
        return sum(1 for _ in pattern.finditer(buf))
    return sum(sum(1 for _ in pattern.finditer(piece, 0, got)) for piece, got in _cut_windows(buf, 0))


def read_at(buf: Buffer, offset: int, size: int) -> bytes:
    """``buf[offset:offset + size]``, for a mapped file without touching the map."""
    fd = getattr(buf, "fd", -1)
    if fd < 0:
        piece = buf[offset: offset + size]
        release(buf, offset, offset + size)
        return piece
    return os.pread(fd, max(0, min(size, len(buf) - offset)), offset)


def materialize(buf: Buffer) -> bytes:
    """The document as ``bytes``: for the rare paths (parsedmarc, a rewrite of
    the text) that need the whole of it in memory anyway."""
    if not isinstance(buf, mmap.mmap):
        return buf
    return read_at(buf, 0, len(buf))


def sha256_hex(buf: Buffer) -> str:
    if not isinstance(buf, mmap.mmap):
        return hashlib.sha256(buf).hexdigest()
    h = hashlib.sha256()
    read = _reader(buf)
    for s in range(0, len(buf), WINDOW):
        piece, got = read(s, WINDOW)
        h.update(memoryview(piece)[:got])
    return h.hexdigest()


def gzip_stream(buf: mmap.mmap, level: int) -> tuple[str, bytes]:
    """sha256 and a gzip of a mapped document in one pass, a window at a time."""
    h = hashlib.sha256()
    z = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    out: list[bytes] = []
    read = _reader(buf)
    for s in range(0, len(buf), WINDOW):
        piece, got = read(s, WINDOW)
        view = memoryview(piece)[:got]
        h.update(view)
        out.append(z.compress(view))
        del view  # the buffer is resized by the next read only when no view holds it
    out.append(z.flush())
    return h.hexdigest(), b"".join(out)


def reread(path: str, limit: int) -> bytes:
    """The file's bytes, read again (after a reader of its map died); ValueError
    when it has grown past ``limit`` since."""
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise ValueError(f"file is {size} bytes, over the {limit} byte limit")
        return fh.read(size + 1)
