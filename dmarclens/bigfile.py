"""Big report files read through a read-only memory map, a window at a time.

Why: a 200,000-record report is 130 MB of XML. Read into memory, those bytes
sit in the process that parses them for the whole parse, so peak memory grows
with the report. Mapped, the bytes stay in the page cache and only the window
being looked at is resident: every pass over the document (the byte checks,
the parse itself, the hash and the gzip for ``report_raw``) hands pages back
(``MADV_DONTNEED``) once it has moved past them, so the process's resident
memory stays flat however big the file.

Every helper here also takes plain ``bytes`` and then does exactly what the
one-line ``bytes`` method would: callers write one code path, and what a
mapped document is checked for is by construction what an in-memory one is.

Only the process that parses maps a file (``dmarclens.parallel`` hands a big
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
import zlib
from collections.abc import Iterator
from typing import TypeAlias

Buffer: TypeAlias = "bytes | mmap.mmap"

WINDOW = 8 * 1024 * 1024
"""Bytes of a mapped document looked at per step (and resident at most per pass)."""

MAP_MIN_BYTES = 4 * 1024 * 1024
"""Files at least this large are mapped when the caller asks for it."""

_PAGE = mmap.PAGESIZE
_RECORD = b"<record"


class FileMap(mmap.mmap):
    """A read-only map that knows which named file it maps (``path``; None for
    an unnamed temporary file holding an inflated report). Only a named file
    can change under the map, so only it is ever read again (``reread``)."""

    path: str | None = None


def map_file(fh: object, path: str | None = None) -> FileMap:
    """A read-only map of an open file (``fh`` has ``fileno()``); ``path``:
    the file's name when it is the user's file, not a temporary one.

    Raises OSError (a filesystem that cannot map, such as some FUSE mounts)
    or ValueError (an empty file): callers read the file instead.
    """
    mm = FileMap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # type: ignore[attr-defined]
    mm.path = path
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
        mm.madvise(mmap.MADV_SEQUENTIAL)  # read-ahead for the passes, which all run front to back
    return mm


def map_spooled(fh: object, size: int) -> Buffer:
    """A map of a file just written through ``fh`` (``b""`` when it is empty:
    an empty file cannot be mapped)."""
    if size == 0:
        return b""
    fh.flush()  # type: ignore[attr-defined]
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


def is_mapped(buf: object) -> bool:
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


def blank(buf: Buffer) -> bool:
    """``buf.isspace()``: true when every byte is whitespace (and there is one)."""
    if not isinstance(buf, mmap.mmap):
        return buf.isspace()
    n = len(buf)
    for s in range(0, n, WINDOW):
        piece = buf[s: s + WINDOW]
        release(buf, s, s + WINDOW)
        if not piece.isspace():
            return False
    return n > 0


def find(buf: Buffer, needle: bytes, start: int = 0) -> int:
    """``buf.find(needle, start)``."""
    if not isinstance(buf, mmap.mmap):
        return buf.find(needle, start)
    n = len(buf)
    for s in range(max(0, start), n, WINDOW):
        i = buf.find(needle, s, min(n, s + WINDOW + len(needle) - 1))
        release(buf, s, s + WINDOW)
        if i != -1:
            return i
    return -1


def contains(buf: Buffer, needle: bytes) -> bool:
    """``needle in buf``."""
    return find(buf, needle) != -1


def count(buf: Buffer, needle: bytes) -> int:
    """``buf.count(needle)`` for a needle that cannot overlap itself (``b"record"``)."""
    if not isinstance(buf, mmap.mmap):
        return buf.count(needle)
    n, total = len(buf), 0
    for s in range(0, n, WINDOW):
        # An occurrence starting in this window ends within the extra
        # len(needle) - 1 bytes; one starting in the next does not fit.
        total += buf[s: min(n, s + WINDOW + len(needle) - 1)].count(needle)
        release(buf, s, s + WINDOW)
    return total


def pieces(buf: mmap.mmap, start: int = 0) -> Iterator[bytes]:
    """The document from ``start`` on, in windows cut just before a ``<record``.

    Why there: a regular expression looking for something inside an element
    (an attribute, an empty ``<reason>``, an ``<identities>`` tag) never spans
    the start of a new record, so a match is never cut in two. A document with
    no further ``<record`` is one window to its end.
    """
    n = len(buf)
    s = start
    while s < n:
        cut = buf.find(_RECORD, min(n, s + WINDOW)) if s + WINDOW < n else -1
        stop = n if cut == -1 else cut
        piece = buf[s:stop]
        release(buf, s, stop)
        yield piece
        s = stop


def search(pattern: re.Pattern[bytes], buf: Buffer, start: int = 0) -> bool:
    """Whether ``pattern.search(buf, start)`` matches, for patterns whose
    matches cannot contain ``<record`` (see ``pieces``)."""
    if not isinstance(buf, mmap.mmap):
        return pattern.search(buf, start) is not None
    return any(pattern.search(piece) is not None for piece in pieces(buf, start))


def count_matches(pattern: re.Pattern[bytes], buf: Buffer) -> int:
    """``len(pattern.findall(buf))`` without the list, for the same patterns."""
    if not isinstance(buf, mmap.mmap):
        return sum(1 for _ in pattern.finditer(buf))
    return sum(sum(1 for _ in pattern.finditer(piece)) for piece in pieces(buf))


def materialize(buf: Buffer) -> bytes:
    """The document as ``bytes``: for the rare paths (parsedmarc, a rewrite of
    the text) that need the whole of it in memory anyway."""
    if not isinstance(buf, mmap.mmap):
        return buf
    return buf[:]


def sha256_hex(buf: Buffer) -> str:
    if not isinstance(buf, mmap.mmap):
        return hashlib.sha256(buf).hexdigest()
    h = hashlib.sha256()
    for s in range(0, len(buf), WINDOW):
        h.update(buf[s: s + WINDOW])
        release(buf, s, s + WINDOW)
    return h.hexdigest()


def gzip_stream(buf: mmap.mmap, level: int) -> tuple[str, bytes]:
    """sha256 and a gzip of a mapped document in one pass, a window at a time."""
    h = hashlib.sha256()
    z = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    out: list[bytes] = []
    for s in range(0, len(buf), WINDOW):
        piece = buf[s: s + WINDOW]
        h.update(piece)
        out.append(z.compress(piece))
        release(buf, s, s + WINDOW)
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
