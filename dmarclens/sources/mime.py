"""Report mail → the report payloads inside it.

Receivers wrap reports every which way: xml/gz/zip attachments
with honest or dishonest content types, inline XML bodies, a whole body that
is the gzip, forwarded ``message/rfc822`` parts, several reports per mail.
This walks the MIME tree and yields each candidate payload; deciding whether a
payload is a valid report is the parser's job.
"""

from __future__ import annotations

import email
import email.policy
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import cast

from dmarclens.core.bigfile import Buffer
from dmarclens.core.errors import ReportParseError
from dmarclens.core.payload import MAX_REPORT_BYTES, read_zip_member, unsafe_member_name

MAX_MIME_DEPTH = 5
MAX_PARTS = 200
_REPORT_NAME_RE = re.compile(r"\.(xml|gz|gzip|zip|json)(\.gz|\.zip)?$", re.I)
_REPORT_TYPES = {
    "application/gzip", "application/x-gzip", "application/zip", "application/x-zip-compressed",
    "application/x-zip", "text/xml", "application/xml", "application/tlsrpt+gzip",
    "application/tlsrpt+json",
}
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class MailPart:
    """A payload found in a mail, with enough context to name it in errors."""

    data: Buffer  # bytes, or a map of a big zip member inflated into a file (core.bigfile)
    member: str  # e.g. "attachment google.com!example.com!1!2.zip" or "forwarded/1/body"
    name: str | None
    problem: str | None = None  # this attachment is unusable; the mail's other reports still count


@dataclass(frozen=True)
class MailInfo:
    message_id: str | None
    subject: str | None
    from_domain: str | None
    is_failure_report: bool


def parse_message(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def mail_info(msg: Message) -> MailInfo:
    sender = str(msg.get("From") or "")
    m = re.search(r"@([A-Za-z0-9.-]+)", sender)
    ctype = msg.get_content_type()
    is_failure = ctype == "multipart/report" and (
        "feedback-report" in str(msg.get("Content-Type", "")).lower()
        or any(p.get_content_type() == "message/feedback-report" for p in msg.walk())
    )
    return MailInfo(
        message_id=(str(msg.get("Message-ID")).strip() if msg.get("Message-ID") else None),
        subject=str(msg.get("Subject")) if msg.get("Subject") else None,
        from_domain=m.group(1).lower() if m else None,
        is_failure_report=is_failure,
    )


def _looks_like_report(part: Message, payload: bytes) -> bool:
    name = part.get_filename() or ""
    ctype = part.get_content_type()
    if _REPORT_NAME_RE.search(name):
        return True
    if ctype in _REPORT_TYPES:
        return True
    if payload.startswith(_GZIP_MAGIC) or payload.startswith(_ZIP_MAGIC):
        return True
    head = payload[:2048].lstrip()
    return ctype.startswith("text/") and (head.startswith(b"<?xml") or b"<feedback" in head)


def iter_report_parts(msg: Message, *, prefix: str = "", depth: int = 0,
                      inflate_dir: str | None = None) -> Iterator[MailPart]:
    """Yield every payload in ``msg`` that could be a report.

    Raises ReportParseError for mail that is structurally hostile (too deep,
    too many parts) so the caller can reject it as a whole. ``inflate_dir``:
    big zip members are inflated into an unnamed file there and come as a
    read-only map (``core.payload.read_zip_member``).
    """
    counter = [0]
    total = 0
    for part in _walk(msg, prefix, depth, counter, inflate_dir):
        # Each part is bounded on its own; the sum must be too, or a zip of fifty
        # members just under the limit would hold gigabytes for one mail.
        total += len(part.data)
        if total > MAX_REPORT_BYTES:
            raise ReportParseError(
                f"mail expands to more than {MAX_REPORT_BYTES // (1024 * 1024)} MB of report data; refused as a bomb"
            )
        yield part


def _walk(part: Message, prefix: str, depth: int, counter: list[int], inflate_dir: str | None) -> Iterator[MailPart]:
    counter[0] += 1
    if counter[0] > MAX_PARTS:
        raise ReportParseError(f"mail has more than {MAX_PARTS} MIME parts")
    ctype = part.get_content_type()
    if ctype == "message/rfc822":
        if depth >= MAX_MIME_DEPTH:
            raise ReportParseError(f"mail nests forwarded messages more than {MAX_MIME_DEPTH} deep")
        inner = part.get_payload()
        for i, inner_msg in enumerate(inner if isinstance(inner, list) else [inner]):
            if isinstance(inner_msg, Message):
                yield from _walk(inner_msg, f"{prefix}forwarded[{i}]/", depth + 1, counter, inflate_dir)
        return
    if part.is_multipart():
        children = part.get_payload()
        for child in children if isinstance(children, list) else []:
            if isinstance(child, Message):
                yield from _walk(child, prefix, depth, counter, inflate_dir)
        return
    payload: bytes | None
    try:
        payload = cast("bytes | None", part.get_payload(decode=True))  # decode=True: bytes, or None if multipart
    except Exception:  # noqa: BLE001 - compat32 decode can raise on garbage; treat as no payload
        payload = None
    if not payload:
        return
    if len(payload) > MAX_REPORT_BYTES:
        raise ReportParseError(f"mail part {part.get_filename() or ctype} is larger than the limit")
    if not _looks_like_report(part, payload):
        return
    name = part.get_filename()
    label = f"attachment {name}" if name else f"{ctype} body"
    if payload.startswith(_ZIP_MAGIC):
        # A broken archive spoils only itself: the mail's other reports are still stored.
        try:
            members = list(_zip_members(payload, f"{prefix}{label}", name, inflate_dir))
        except ReportParseError as e:
            members = [MailPart(data=b"", member=f"{prefix}{label}", name=name, problem=str(e))]
        yield from members
    else:
        yield MailPart(data=payload, member=f"{prefix}{label}", name=name)


def _zip_members(data: bytes, label: str, name: str | None, inflate_dir: str | None) -> Iterator[MailPart]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise ReportParseError(f"{label}: corrupt zip archive: {e}") from e
    with zf:
        members = [i for i in zf.infolist() if not i.is_dir()]
        if not members:
            raise ReportParseError(f"{label}: zip archive is empty")
        if len(members) > 50:
            raise ReportParseError(f"{label}: zip archive holds {len(members)} files; refused")
        claimed = sum(i.file_size for i in members)
        if claimed > MAX_REPORT_BYTES:
            # Checked before reading any member: the mail's parts are held together.
            raise ReportParseError(
                f"{label}: zip archive expands to {claimed // (1024 * 1024)} MB; refused as a bomb"
            )
        for info in members:
            unsafe = unsafe_member_name(info.filename)
            if unsafe:
                raise ReportParseError(f"{label}: {unsafe}")
            yield MailPart(
                data=read_zip_member(zf, info, inflate_dir=inflate_dir),
                member=f"{label}!{info.filename}" if len(members) > 1 else label,
                name=info.filename or name,
            )
