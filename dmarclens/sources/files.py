"""Files and folders → RawItems, one per report payload.

Accepts what people actually have lying around: loose .xml/.gz/.zip reports,
saved report mail (.eml), mbox files, Maildir folders, and folders of any mix
of those (recursively). An unreadable input becomes a RawItem with ``problem``
set, so the pipeline records it and moves on: nothing is skipped silently.
"""

from __future__ import annotations

import io
import logging
import mailbox
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmarclens.core import bigfile
from dmarclens.core.errors import ReportParseError
from dmarclens.core.models import OriginKind, RawItem
from dmarclens.core.payload import MAX_REPORT_BYTES, read_zip_member, unsafe_member_name
from dmarclens.sources.mailauth import check_mail
from dmarclens.sources.mime import iter_report_parts, mail_info, parse_message

log = logging.getLogger(__name__)

MAX_ZIP_MEMBERS = 50
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"
_HEADER_RE = re.compile(rb"^[A-Za-z][A-Za-z0-9-]{0,60}:[ \t]")
_SKIP_NAMES = re.compile(r"^(readme|license|changelog)(\.[a-z]+)?$", re.I)


def is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def looks_like_mail(data: bytes) -> bool:
    """Mail starts with header lines; reports start with '<', '{' or a magic number."""
    head = data[:2048].lstrip(b"\r\n")
    return bool(_HEADER_RE.match(head)) and b"\n\n" in data[:65536].replace(b"\r\n", b"\n")


@dataclass(frozen=True)
class FileTask:
    """A file to be read by the process that parses it.

    With a pool of parsing processes, the one process that also writes the
    database would otherwise open and read every file of a 10,000-report
    folder and send its bytes on; a worker reads it (``expand``) instead.
    """

    path: str


def iter_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[RawItem]:
    """Every report payload under the given files and folders, in a stable order."""
    for item in iter_path_tasks(paths):
        yield from expand(item)


def iter_path_tasks(paths: Iterable[str | os.PathLike[str]]) -> Iterator[RawItem | FileTask]:
    """``iter_paths`` with each file left unread, as a ``FileTask`` (Maildir
    folders and missing paths are resolved here); ``expand`` reads one."""
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            yield RawItem(data=b"", origin=str(path), problem="no such file or folder")
        elif is_maildir(path):
            yield from iter_maildir(path)
        elif path.is_dir():
            yield from _iter_dir(path)
        else:
            yield FileTask(str(path))


def expand(item: RawItem | FileTask, *, map_big: bool = False, inflate_dir: str | None = None) -> Iterator[RawItem]:
    """The payloads of a ``FileTask`` (a RawItem is its own); see ``iter_file``
    for ``map_big`` and ``inflate_dir``."""
    if isinstance(item, FileTask):
        yield from iter_file(Path(item.path), map_big=map_big, inflate_dir=inflate_dir)
    else:
        yield item


def _iter_dir(root: Path) -> Iterator[RawItem | FileTask]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        for d in list(dirnames):
            if is_maildir(here / d):
                dirnames.remove(d)
                yield from iter_maildir(here / d)
        for name in sorted(filenames):
            if name.startswith(".") or _SKIP_NAMES.match(name):
                log.debug("skipping %s", here / name)
                continue
            yield FileTask(os.path.join(dirpath, name))


def iter_file(path: Path, *, map_big: bool = False, inflate_dir: str | None = None) -> Iterator[RawItem]:
    """The report payloads in one file.

    ``map_big``: a bare report (not a mailbox, mail or zip archive) of
    ``bigfile.MAP_MIN_BYTES`` or more comes as a read-only map of the file
    rather than its bytes, for a process that parses it a window at a time
    (``dmarclens.core.bigfile``), and so does a zip member that large, inflated
    into an unnamed file in ``inflate_dir`` (the system's temporary directory
    if None). Such items must not be pickled.
    """
    origin = str(path)
    try:
        # One open per file: a folder of 10,000 small reports means 10,000
        # of these, in a pool worker or in the writer.
        with path.open("rb", buffering=0) as fh:  # unbuffered: readall() sizes one buffer from fstat
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_REPORT_BYTES:
                yield RawItem(data=b"", origin=origin,
                              problem=f"file is {size} bytes, over the {MAX_REPORT_BYTES} byte limit")
                return
            data = fh.read(8)
            mbox = data.startswith(b"From ")
            if not mbox and len(data) == 8:
                fh.seek(0)
                if (map_big and size >= bigfile.MAP_MIN_BYTES and path.suffix.lower() != ".eml"
                        and _bare_report(fh.read(65536))):
                    try:
                        mapped = bigfile.map_file(fh, origin)
                    except (OSError, ValueError) as e:  # cannot be mapped here (or emptied meanwhile): read it
                        log.debug("%s: not mapped (%s); reading it", origin, e)
                    else:
                        yield RawItem(data=mapped, origin=origin, name=path.name)
                        return
                fh.seek(0)
                data = fh.readall()  # not head + rest, nor a buffered read: both copy a 100 MB report
    except OSError as e:
        yield RawItem(data=b"", origin=origin, problem=f"cannot read: {e.strerror}")
        return
    if mbox:
        yield from iter_mbox(path)
        return
    if data.startswith(_OLE_MAGIC):
        yield RawItem(data=data, origin=origin, name=path.name,
                      problem="Outlook .msg file: not supported, save the mail as .eml instead")
    elif data.startswith(_ZIP_MAGIC):
        yield from iter_zip(data, origin=origin, name=path.name, inflate_dir=_inflate_dir(map_big, inflate_dir))
    elif path.suffix.lower() == ".eml" or looks_like_mail(data):
        yield from items_from_mail(data, origin=origin, origin_kind="eml",
                                   inflate_dir=_inflate_dir(map_big, inflate_dir))
    else:
        yield RawItem(data=data, origin=origin, name=path.name)


def _inflate_dir(map_big: bool, inflate_dir: str | None) -> str | None:
    return (inflate_dir or tempfile.gettempdir()) if map_big else None


def _bare_report(head: bytes) -> bool:
    """What ``iter_file`` would yield as it is (no archive, mail or Outlook file)."""
    return not (head.startswith((_OLE_MAGIC, _ZIP_MAGIC, b"From ")) or looks_like_mail(head))


def iter_zip(data: bytes, *, origin: str, name: str | None, origin_kind: OriginKind = "file",
             inflate_dir: str | None = None) -> Iterator[RawItem]:
    """A zip archive may hold one report (the usual case) or a folder's worth
    (``inflate_dir``: big members are inflated there and come mapped,
    ``core.payload.read_zip_member``)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        yield RawItem(data=data, origin=origin, name=name, problem=f"corrupt zip archive: {e}")
        return
    with zf:
        members = [i for i in zf.infolist() if not i.is_dir()]
        if not members:
            yield RawItem(data=data, origin=origin, name=name, problem="zip archive is empty")
            return
        if len(members) > MAX_ZIP_MEMBERS:
            yield RawItem(data=b"", origin=origin, name=name,
                          problem=f"zip archive holds {len(members)} files (limit {MAX_ZIP_MEMBERS}); refused")
            return
        single = len(members) == 1
        for info in members:
            member = None if single else info.filename
            unsafe = unsafe_member_name(info.filename)
            if unsafe:
                yield RawItem(data=b"", origin=origin, origin_kind=origin_kind, member=info.filename,
                              name=info.filename, problem=unsafe)
                continue
            try:
                payload = read_zip_member(zf, info, inflate_dir=inflate_dir)
            except ReportParseError as e:
                yield RawItem(data=b"", origin=origin, member=member, name=info.filename, problem=str(e))
                continue
            yield RawItem(data=payload, origin=origin, origin_kind=origin_kind, member=member, name=info.filename)


def iter_mbox(path: Path) -> Iterator[RawItem]:
    box = mailbox.mbox(str(path), create=False)
    try:
        for i, key in enumerate(box.iterkeys()):
            try:
                data = box.get_bytes(key)
            except Exception as e:  # noqa: BLE001 - a damaged mbox entry must not stop the rest
                yield RawItem(data=b"", origin=str(path), origin_kind="mbox", member=f"message {i + 1}",
                              problem=f"unreadable mbox message: {e}")
                continue
            yield from items_from_mail(data, origin=str(path), origin_kind="mbox", member=f"message {i + 1}")
    finally:
        box.close()


def iter_maildir(path: Path) -> Iterator[RawItem]:
    box = mailbox.Maildir(str(path), factory=None, create=False)
    for key in sorted(box.iterkeys()):
        try:
            data = box.get_bytes(key)
        except Exception as e:  # noqa: BLE001 - a damaged Maildir entry must not stop the rest
            yield RawItem(data=b"", origin=str(path), origin_kind="maildir", member=key,
                          problem=f"unreadable Maildir message: {e}")
            continue
        yield from items_from_mail(data, origin=str(path), origin_kind="maildir", member=key)


def items_from_mail(
    data: bytes,
    *,
    origin: str,
    origin_kind: OriginKind = "eml",
    member: str | None = None,
    mailbox_name: str | None = None,
    uidvalidity: int | None = None,
    uid: int | None = None,
    inflate_dir: str | None = None,
) -> list[RawItem]:
    """Every report payload in one mail message (at least one item, so the
    mail is always accounted for: a mail with no report yields a problem item).

    ``inflate_dir``: a zip member of ``bigfile.MAP_MIN_BYTES`` or more is
    inflated into an unnamed file there and comes mapped (``iter_file``)."""
    base: dict[str, Any] = {  # the fields every item of this mail shares
        "origin": origin, "origin_kind": origin_kind, "mailbox": mailbox_name,
        "uidvalidity": uidvalidity, "uid": uid,
    }

    def label(part: str | None) -> str | None:
        if member and part:
            return f"{member}: {part}"
        return member or part

    try:
        msg = parse_message(data)
        info = mail_info(msg)
    except Exception as e:  # noqa: BLE001 - the email package raises many types on garbage
        return [RawItem(data=data, member=member, problem=f"unreadable mail: {e}", **base)]
    base["message_id"] = info.message_id
    base["mail_from_domain"] = info.from_domain
    base["mail_auth"] = check_mail(data, msg)  # the mail's own DKIM / Authentication-Results (forged reports)
    if info.is_failure_report:
        return [RawItem(data=b"", member=label("failure report"), kind_hint="failure", **base)]
    items: list[RawItem] = []
    try:
        for part in iter_report_parts(msg, inflate_dir=inflate_dir):
            items.append(RawItem(data=part.data, member=label(part.member), name=part.name,
                                 problem=part.problem, **base))
    except ReportParseError as e:
        return [RawItem(data=b"", member=member, problem=str(e), **base)]
    if not items:
        subject = (info.subject or "").strip()[:120]
        return [RawItem(data=b"", member=member,
                        problem=f"mail has no report attachment (subject: {subject!r})", **base)]
    return items
