"""Package report XML the way receivers deliver it: files, mail and mbox.

A parser that has only seen bare XML breaks on the first real mailbox, so the
generator reproduces the envelopes too: ``.xml.gz`` and ``.zip`` files named
``receiver!policy-domain!begin!end[!id].ext`` (RFC 7489 section 7.2.1.1), and
report mail with every attachment style found in the wild, inline XML bodies,
a body that *is* the gzip (one Mimecast style), forwarded copies
(``message/rfc822``) and several reports in one message.

Everything here is deterministic: gzip and zip headers carry a fixed mtime,
MIME boundaries derive from the Message-ID, dates are passed in. Re-running
the generator therefore yields byte-identical files, which keeps
``sample_reports/`` diffs honest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import quopri
import re
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import encoders, message_from_bytes
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime
from typing import Literal

from .spec import ReportSpec

FileKind = Literal["xml", "xml.gz", "zip"]
SubjectStyle = Literal["rfc", "lower", "bare"]
AttachmentStyle = Literal["gzip", "zip", "x-zip", "octet-gz", "xml"]
TransferEncoding = Literal["base64", "7bit", "quoted-printable"]

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

# style -> (file extension, MIME type)
ATTACHMENT_STYLES: dict[AttachmentStyle, tuple[FileKind, str]] = {
    "gzip": ("xml.gz", "application/gzip"),
    "zip": ("zip", "application/zip"),
    "x-zip": ("zip", "application/x-zip-compressed"),
    "octet-gz": ("xml.gz", "application/octet-stream"),
    "xml": ("xml", "text/xml"),
}


# --------------------------------------------------------------------------- files


def report_filename(spec: ReportSpec, kind: FileKind = "xml", *, unique_id: str | None = None) -> str:
    """``receiver!policy-domain!begin!end[!unique-id].kind`` as RFC 7489 suggests."""
    base = f"{spec.receiver}!{spec.domain}!{spec.begin}!{spec.end}"
    if unique_id:
        base += f"!{unique_id}"
    return f"{base}.{kind}"


def gzip_bytes(data: bytes, *, name: str | None = None, compresslevel: int = 9) -> bytes:
    """Gzip with mtime 0 (so output is reproducible) and an optional FNAME."""
    buf = io.BytesIO()
    with gzip.GzipFile(
        filename=name or "", mode="wb", fileobj=buf, mtime=0, compresslevel=compresslevel
    ) as gz:
        gz.write(data)
    return buf.getvalue()


def zip_bytes(member_name: str, data: bytes) -> bytes:
    """A one-member deflated zip with a fixed 1980-01-01 timestamp."""
    info = zipfile.ZipInfo(member_name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.create_system = 3
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, data)
    return buf.getvalue()


def wrap_xml(xml: bytes, kind: FileKind, *, member_name: str = "report.xml") -> bytes:
    """Compress rendered XML as a file of ``kind`` (``xml`` returns it unchanged)."""
    if kind == "xml":
        return xml
    if kind == "xml.gz":
        return gzip_bytes(xml, name=member_name)
    return zip_bytes(member_name, xml)


def report_file(
    spec: ReportSpec,
    xml: bytes,
    kind: FileKind,
    *,
    unique_id: str | None = None,
    member_name: str | None = None,
) -> tuple[str, bytes]:
    """File name and bytes for one report, as a receiver would attach it.

    By default a zip member (or gzip FNAME) repeats the file's base name, as
    Google does; pass ``member_name`` for receivers whose archive holds a
    differently named XML.
    """
    name = report_filename(spec, kind, unique_id=unique_id)
    inner = member_name or report_filename(spec, "xml", unique_id=unique_id)
    return name, wrap_xml(xml, kind, member_name=inner)


# --------------------------------------------------------------------------- mail


@dataclass(frozen=True)
class Attachment:
    """One MIME part carrying a report (already compressed if it should be)."""

    filename: str
    data: bytes
    content_type: str = "application/gzip"
    encoding: TransferEncoding = "base64"


@dataclass(frozen=True)
class MailMeta:
    """Headers of a report mail; ``date`` must be timezone-aware."""

    from_addr: str
    to_addr: str
    subject: str
    date: datetime
    message_id: str


def report_subject(spec: ReportSpec, style: SubjectStyle = "rfc") -> str:
    """The Subject receivers use; RFC 7489 wording or a common variant."""
    if style == "rfc":
        return f"Report Domain: {spec.domain} Submitter: {spec.receiver} Report-ID: <{spec.report_id}>"
    if style == "lower":
        return f"Report domain: {spec.domain} Submitter: {spec.receiver} Report-ID: {spec.report_id}"
    return f"DMARC Aggregate Report for {spec.domain}"


def attachment_for(
    spec: ReportSpec,
    xml: bytes,
    style: AttachmentStyle,
    *,
    unique_id: str | None = None,
    member_name: str | None = None,
    encoding: TransferEncoding = "base64",
) -> Attachment:
    """Wrap rendered XML as the attachment a receiver of ``style`` sends."""
    kind, content_type = ATTACHMENT_STYLES[style]
    name, data = report_file(spec, xml, kind, unique_id=unique_id, member_name=member_name)
    return Attachment(filename=name, data=data, content_type=content_type, encoding=encoding)


def _boundary(message_id: str, salt: str = "") -> str:
    digest = hashlib.sha1(f"{message_id}{salt}".encode()).hexdigest()[:24]
    return f"----=_Part_{digest}"


def _set_headers(msg: Message, meta: MailMeta) -> None:
    msg["From"] = meta.from_addr
    msg["To"] = meta.to_addr
    msg["Subject"] = meta.subject
    msg["Date"] = format_datetime(meta.date)
    msg["Message-ID"] = meta.message_id


def _attachment_part(att: Attachment, *, disposition: str = "attachment") -> MIMEBase:
    maintype, subtype = att.content_type.split("/", 1)
    part = MIMEBase(maintype, subtype, name=att.filename)
    if att.encoding == "base64":
        part.set_payload(att.data)
        encoders.encode_base64(part)
    elif att.encoding == "quoted-printable":
        part.set_payload(quopri.encodestring(att.data).decode("ascii"))
        part["Content-Transfer-Encoding"] = "quoted-printable"
    else:
        part.set_payload(att.data.decode("utf-8", errors="surrogateescape"))
        part["Content-Transfer-Encoding"] = "7bit"
    part.add_header("Content-Disposition", disposition, filename=att.filename)
    return part


def _serialize(msg: Message, linesep: str) -> bytes:
    return msg.as_bytes(policy=compat32.clone(linesep=linesep))


def report_email(
    attachments: Sequence[Attachment],
    meta: MailMeta,
    *,
    text: str | None = None,
    linesep: str = "\r\n",
) -> bytes:
    """A multipart/mixed report mail: optional text part, then the report(s).

    Several attachments make the "several reports in one message" case.
    """
    msg = MIMEMultipart("mixed", boundary=_boundary(meta.message_id))
    _set_headers(msg, meta)
    if text is not None:
        msg.attach(MIMEText(text, "plain", "us-ascii"))
    for att in attachments:
        msg.attach(_attachment_part(att))
    return _serialize(msg, linesep)


def inline_report_email(
    xml: bytes, meta: MailMeta, *, encoding: TransferEncoding = "base64", linesep: str = "\r\n"
) -> bytes:
    """A single-part ``text/xml`` message whose body is the report itself."""
    if encoding == "base64":
        msg: Message = MIMEText(xml.decode("utf-8", errors="replace"), "xml", "utf-8")
    else:
        msg = MIMEBase("text", "xml", charset="utf-8")
        if encoding == "quoted-printable":
            msg.set_payload(quopri.encodestring(xml).decode("ascii"))
        else:
            msg.set_payload(xml.decode("utf-8", errors="surrogateescape"))
        msg["Content-Transfer-Encoding"] = encoding
    msg["Content-Disposition"] = "inline"
    _set_headers(msg, meta)
    return _serialize(msg, linesep)


def whole_body_gzip_email(
    gz: bytes, filename: str, meta: MailMeta, *, content_type: str = "application/gzip", linesep: str = "\r\n"
) -> bytes:
    """A non-multipart message whose whole body is the gzip (one Mimecast style)."""
    maintype, subtype = content_type.split("/", 1)
    msg = MIMEBase(maintype, subtype, name=filename)
    msg.set_payload(gz)
    encoders.encode_base64(msg)
    msg.add_header("Content-Disposition", "attachment", filename=filename)
    _set_headers(msg, meta)
    return _serialize(msg, linesep)


def forward_email(
    inner: bytes,
    meta: MailMeta,
    *,
    note: str = "FYI, forwarding this DMARC report.\n",
    linesep: str = "\r\n",
) -> bytes:
    """Wrap a whole report mail as ``message/rfc822`` inside a new message.

    This is what arrives when a colleague forwards a report "as attachment",
    or a helpdesk system relays the rua mailbox.
    """
    msg = MIMEMultipart("mixed", boundary=_boundary(meta.message_id, "fwd"))
    _set_headers(msg, meta)
    msg.attach(MIMEText(note, "plain", "us-ascii"))
    inner_msg = message_from_bytes(inner.replace(b"\r\n", b"\n"))
    msg.attach(MIMEMessage(inner_msg))
    return _serialize(msg, linesep)


_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


def mbox_bytes(messages: Iterable[tuple[bytes, str, datetime]]) -> bytes:
    """An mboxrd file from ``(message, envelope sender, delivery time)`` triples.

    Built by hand rather than with ``mailbox.mbox`` so the separator lines
    carry the given times instead of the wall clock.
    """
    out = io.BytesIO()
    for data, sender, when in messages:
        when_utc = when.astimezone(UTC)
        out.write(f"From {sender} {time.asctime(when_utc.timetuple())}\n".encode("ascii"))
        body = _FROM_LINE.sub(rb">\1", data.replace(b"\r\n", b"\n"))
        out.write(body)
        if not body.endswith(b"\n"):
            out.write(b"\n")
        out.write(b"\n")
    return out.getvalue()
