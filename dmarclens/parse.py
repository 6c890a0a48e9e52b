"""One report payload (bytes) → a normalized ``ParsedItem``.

parsedmarc does the format work (legacy RFC 7489, RFC 9990, the old draft
schema, recovery from broken XML, the day split of multi-day reports) and is
always called with ``offline=True``: parsing never touches the network.
This module only turns its dicts into dmarclens' columnar records and decides
what kind of report a payload is.

Containers (zip archives with several members, mail, mbox) are opened by
``dmarclens.sources``; by the time bytes reach here they are one report,
possibly gzip/zip-compressed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import ipaddress
import logging
import math
import re
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any

from dmarclens import bigfile
from dmarclens.errors import ReportParseError
from dmarclens.models import ParsedItem, PolicyPublished, RecordBatch, Report, ReportFormat

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 256 * 1024 * 1024
"""Largest decompressed report we accept. Real reports from the biggest
receivers are tens of MB; anything far past that is a bomb, not a report."""

RFC9990_NS = "urn:ietf:params:xml:ns:dmarc-2.0"
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_BOMS = (b"\xef\xbb\xbf",)
_DRAFT_RE = re.compile(rb"<identities[\s>]")
_FEEDBACK_RE = re.compile(rb"(?im)^feedback-type\s*:")
_EMPTY_REASON_RE = re.compile(rb"<reason\s*/>|<reason>\s*</reason>")


class _RecordWarnings(logging.Handler):
    """Collects parsedmarc's per-record warnings: it skips a record it cannot
    parse and only logs it, and dmarclens must not lose data silently."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Could not parse record"):
            self.messages.append(text)


def decompress(data: bytes, *, limit: int = MAX_REPORT_BYTES, inflate_dir: str | None = None) -> bytes:
    """Undo gzip or single-member zip compression, refusing to inflate past ``limit``.

    ``inflate_dir``: inflate into an unnamed file there and return a read-only
    map of it (``dmarclens.bigfile``) instead of ``bytes``, so a 130 MB report
    delivered as 4 MB of gzip is never held in memory either.
    """
    magic = data[:4]  # a slice, not startswith: ``data`` may be a mapped file (dmarclens.bigfile)
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


def _gunzip_chunks(data: bytes, d: Any) -> Iterator[bytes]:
    buf = data
    while not d.eof:
        out = d.decompress(buf, _SCAN_CHUNK)
        buf = d.unconsumed_tail
        if out:
            yield out
        elif not buf:
            return


def gunzip_bounded(data: bytes, *, limit: int = MAX_REPORT_BYTES) -> bytes:
    d = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        size = _scan_inflated(_gunzip_chunks(data, d), limit=limit, what="gzip")
        if not d.eof:
            raise ReportParseError("truncated gzip data (stream ends early)")
        return zlib.decompress(data, zlib.MAX_WBITS | 16, size + 1)
    except zlib.error as e:
        raise ReportParseError(f"corrupt gzip data: {e}") from e


def _spool(chunks: Iterable[bytes], *, limit: int, what: str, directory: str) -> bytes | None:
    """Inflated ``chunks`` in an unnamed file in ``directory``, returned mapped
    (``dmarclens.bigfile``), with ``_scan_inflated``'s checks on the way; None
    when nothing can be written there (no room, no right): the caller then
    inflates into memory as usual."""
    try:
        with tempfile.TemporaryFile(dir=directory) as fh:
            return bigfile.map_spooled(fh, _scan_inflated(chunks, limit=limit, what=what, sink=fh.write))
    except OSError as e:
        log.debug("cannot inflate %s into %s (%s); inflating in memory", what, directory, e)
        return None


def _gunzip_to_map(data: bytes, *, limit: int, directory: str) -> bytes:
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
                    inflate_dir: str | None = None) -> bytes:
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
    if _UNSAFE_CHARS_RE.search(name):
        return f"zip member name {name[:120]!r} holds control characters; refused"
    return None


def sniff(data: bytes) -> str:
    """Classify a decompressed payload: xml, json, feedback (RUF), or unknown."""
    head = data[:4096]
    for bom in _BOMS:
        if head.startswith(bom):
            head = head[len(bom):]
    stripped = head.lstrip()
    if stripped.startswith(b"<"):
        return "xml"
    if stripped.startswith(b"{"):
        return "json"
    if _FEEDBACK_RE.search(head):
        return "feedback"
    return "unknown"


def parse_payload(data: bytes, *, fallback_org: str | None = None) -> ParsedItem:
    """Parse one report payload. Raises ReportParseError with a plain reason."""
    if not data or bigfile.blank(data):  # not strip: no copy of a 250 MB payload
        raise ReportParseError("empty file")
    payload = to_utf8(decompress(data))
    if not payload or bigfile.blank(payload):
        raise ReportParseError("empty report after decompression")
    kind = sniff(payload)
    if kind == "xml":
        precheck_xml(payload)
        report = check_report(parse_aggregate(payload, fallback_org=fallback_org))
        return ParsedItem(kind="aggregate", report=report, raw_xml=payload)
    if kind == "json":
        return _parse_json(payload)
    if kind == "feedback":
        return ParsedItem(kind="failure", summary="DMARC failure (RUF) report")
    raise ReportParseError("not a DMARC aggregate report (neither XML, gzip, zip nor TLS-RPT JSON)")


def _parse_json(payload: bytes) -> ParsedItem:
    import parsedmarc

    try:
        tls = parsedmarc.parse_smtp_tls_report_json(bigfile.materialize(payload))  # json.loads wants bytes
    except parsedmarc.InvalidSMTPTLSReport as e:
        raise ReportParseError(f"JSON that is not an SMTP TLS report: {_short(e)}") from e
    return ParsedItem(
        kind="smtp_tls",
        summary=f"SMTP TLS report from {tls.get('organization_name')} id {tls.get('report_id')}",
    )


def parse_aggregate(xml: bytes, *, fallback_org: str | None = None) -> Report:
    """The ingest path: the streaming parser (``dmarclens.fastparse``) first,
    parsedmarc for whatever it declines; each fallback is logged and the
    stored report says which parser made it (``reports.parser``)."""
    from dmarclens.fastparse import FastPathDeclined, parse_aggregate_fast

    prepared = prepare_aggregate_xml(xml, fallback_org=fallback_org)
    try:
        return parse_aggregate_fast(prepared)
    except FastPathDeclined as e:
        log.info("fast parser declined (%s); parsing with parsedmarc", e)
    return _parse_prepared_with_parsedmarc(prepared)


def prepare_aggregate_xml(xml: bytes, *, fallback_org: str | None = None) -> bytes:
    """Clean-ups applied before either parser sees the XML."""
    if fallback_org and re.search(rb"<org_name>\s*</org_name>|<org_name\s*/>", xml[:8192]):
        # Some receivers leave org_name empty; the report mail's sender domain
        # is the best stand-in (REPORTERS.md). parsedmarc would use the email.
        xml = re.sub(rb"<org_name>\s*</org_name>|<org_name\s*/>",
                     b"<org_name>" + fallback_org.encode() + b"</org_name>", xml, count=1)
    # An empty <reason/> carries nothing, but parsedmarc drops the whole record
    # over it (its comment unwrapping hits None); remove it first.
    # A mapped big file is copied into memory only if there is something to remove.
    if bigfile.contains(xml, b"<reason") and (not bigfile.is_mapped(xml) or bigfile.search(_EMPTY_REASON_RE, xml)):
        xml = _EMPTY_REASON_RE.sub(b"", bigfile.materialize(xml))
    return xml


def parse_aggregate_xml(xml: bytes, *, fallback_org: str | None = None) -> Report:
    """Parse aggregate XML with parsedmarc (offline) and normalize it: the reference."""
    return _parse_prepared_with_parsedmarc(prepare_aggregate_xml(xml, fallback_org=fallback_org))


def _parse_prepared_with_parsedmarc(xml: bytes) -> Report:
    import parsedmarc

    xml = bigfile.materialize(xml)  # parsedmarc wants it whole, in memory
    check_parsedmarc_budget(xml)
    collector = _RecordWarnings()
    pd_log = logging.getLogger("parsedmarc")
    pd_log.addHandler(collector)
    try:
        with parsedmarc_warnings_enabled():
            parsed = parsedmarc.parse_aggregate_report_xml(xml, offline=True)
    except parsedmarc.InvalidAggregateReport as e:
        raise ReportParseError(f"invalid aggregate report: {_short(e)}") from e
    finally:
        pd_log.removeHandler(collector)
    report = normalize(parsed, draft=is_draft_schema(xml))
    if collector.messages:
        report.warnings.append(
            f"{len(collector.messages)} record(s) skipped as unparseable: {_short(Exception(collector.messages[0]), 160)}"
        )
    return report


def is_draft_schema(xml: bytes) -> bool:
    """The pre-RFC DMARC wiki schema: ``<identities>``, or no ``<version>`` and SPF
    results without the ``<scope>`` RFC 7489 added. Legacy reports that merely omit
    ``<version>`` still carry ``<scope>``, so they stay rfc7489."""
    if bigfile.search(_DRAFT_RE, xml):
        return True
    return b"<version" not in xml[:4096] and bigfile.contains(xml, b"<spf>") and not bigfile.contains(xml, b"<scope>")


def _short(err: Exception, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def _local_to_utc(text: str) -> datetime:
    # parsedmarc renders begin_date/end_date in the process's local time.
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").astimezone(UTC)


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _lower(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    return text or None


def detect_format(parsed: dict[str, Any], *, draft: bool) -> ReportFormat:
    pol = parsed["policy_published"]
    meta = parsed["report_metadata"]
    if (
        parsed.get("xml_namespace") == RFC9990_NS
        or meta.get("generator")
        or any(pol.get(k) is not None for k in ("np", "testing", "discovery_method"))
    ):
        return "rfc9990"
    if draft:
        return "draft"
    return "rfc7489"


def normalize(parsed: dict[str, Any], *, draft: bool = False) -> Report:
    """parsedmarc's aggregate dict → Report with a columnar RecordBatch."""
    meta = parsed["report_metadata"]
    pol = parsed["policy_published"]
    batch = RecordBatch()
    day_cache: dict[str, date] = {}
    for rec in parsed["records"]:
        ib = rec["interval_begin"]
        begin = _utc(ib)
        day = day_cache.get(ib[:10])
        if day is None:
            day = day_cache[ib[:10]] = begin.date()
        batch.day.append(day)
        batch.interval_begin.append(begin)
        batch.interval_end.append(_utc(rec["interval_end"]))
        batch.source_ip.append(rec["source"]["ip_address"])
        batch.count.append(int(rec["count"]))
        pe = rec["policy_evaluated"]
        batch.disposition.append(_lower(pe.get("disposition")) or "none")
        batch.policy_dkim.append(_lower(pe.get("dkim")) or "fail")
        batch.policy_spf.append(_lower(pe.get("spf")) or "fail")
        al = rec["alignment"]
        batch.dkim_aligned.append(bool(al["dkim"]))
        batch.spf_aligned.append(bool(al["spf"]))
        batch.dmarc_pass.append(bool(al["dmarc"]))
        batch.override_reasons.append([
            {"type": _lower(r.get("type")), "comment": (r.get("comment") or None)}
            for r in pe.get("policy_override_reasons") or []
            if isinstance(r, dict)
        ])
        ids = rec["identifiers"]
        batch.header_from.append(_lower(ids.get("header_from")))
        batch.envelope_from.append(_lower(ids.get("envelope_from")))
        batch.envelope_to.append(_lower(ids.get("envelope_to")))
        auth = rec["auth_results"]
        batch.dkim.append([
            {"domain": _lower(d.get("domain")), "selector": d.get("selector"), "result": _lower(d.get("result"))}
            for d in auth.get("dkim") or []
        ])
        batch.spf.append([
            {"domain": _lower(s.get("domain")), "scope": _lower(s.get("scope")), "result": _lower(s.get("result"))}
            for s in auth.get("spf") or []
        ])
    if batch.interval_begin:
        begin = min(batch.interval_begin)
        end = max(batch.interval_end)
    else:
        begin = _local_to_utc(meta["begin_date"])
        end = _local_to_utc(meta["end_date"])
    policy = PolicyPublished(
        domain=_lower(pol["domain"]) or "",
        adkim=_lower(pol.get("adkim")) or "r",
        aspf=_lower(pol.get("aspf")) or "r",
        p=_lower(pol.get("p")),
        sp=_lower(pol.get("sp")),
        np=_lower(pol.get("np")),
        pct=_opt_int(pol.get("pct")),
        fo=pol.get("fo"),
        testing=_lower(pol.get("testing")),
        discovery_method=_lower(pol.get("discovery_method")),
    )
    if not policy.domain:
        raise ReportParseError("invalid aggregate report: policy_published has no domain")
    return Report(
        org_name=str(meta["org_name"]).strip(),
        org_email=meta.get("org_email"),
        org_extra_contact=meta.get("org_extra_contact_info"),
        report_id=str(meta["report_id"]).strip(),
        begin=begin,
        end=end,
        policy=policy,
        format=detect_format(parsed, draft=draft),
        xml_schema=parsed.get("xml_schema"),
        xml_namespace=parsed.get("xml_namespace"),
        generator=meta.get("generator"),
        errors=list(meta.get("errors") or []),
        records=batch,
        parser="parsedmarc",
    )


# --------------------------------------------------------------------------- hostile-input guards
#
# A rua address is public: anyone can mail it anything, and the ingester runs
# unattended. These checks run around both parsers (fast and parsedmarc) and
# turn every input into either a sane Report or one ReportParseError with a
# plain reason. Decisions per case are in docs/reliability.md.

MAX_RECORDS = 500_000
"""Records one report may hold. The biggest receivers send tens of thousands;
a million-record "report" is a resource attack (database bloat), not data."""

PARSEDMARC_MAX_ROWS = 50_000
"""Rows (records x days of a multi-day report) the parsedmarc fallback may
build: it keeps ~8 KB of dicts per row, so this keeps one report under ~500 MB.
The streaming fast path has no such cost; only what it declines meets this."""

MAX_TEXT_RUN = 1024 * 1024
"""No text node or attribute in a report comes near 1 MB; a longer run without
markup is a memory attack on the XML parsers."""

MAX_DEPTH = 64
"""Opening tags in a row (no closing tag between) that a report may have;
real ones have about six (feedback, record, row, policy_evaluated, reason, type)."""

MAX_COUNT = 1_000_000_000
"""Largest message count one record may claim (one source IP, one day)."""

MAX_SPAN_SECONDS = 62 * 86400
"""Longest reporting interval accepted. Reporters send daily, some weekly or
for "several weeks"; a 10-year span is garbage and would be split into 3,650
days of rows."""

MIN_REPORT_TIME = datetime(2012, 1, 1, tzinfo=UTC)
"""DMARC was published in 2012; an interval before that is a broken clock."""

FUTURE_SLACK_SECONDS = 2 * 86400
"""How far past "now" a report interval may end (clock skew between receivers)."""

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_FEEDBACK_OPEN_RE = re.compile(rb"<(?:[\w.-]+:)?feedback[\s>/]")
_FEEDBACK_CLOSE_RE = re.compile(rb"</(?:[\w.-]+:)?feedback\s*>")
_DOCTYPE_RE = re.compile(rb"<!DOCTYPE", re.I)
_ENTITY_RE = re.compile(rb"<!ENTITY", re.I)
_RECORD_RE = re.compile(rb"<(?:[\w.-]+:)?record[\s>]")
# MAX_DEPTH + 1 opening tags with only text between them: each one nests deeper.
_DEEP_RE = re.compile(rb"(?:<[A-Za-z][^<>/]*>[^<]*){%d}" % (MAX_DEPTH + 1))
_BEGIN_RE = re.compile(rb"<(?:[\w.-]+:)?begin\s*>\s*([^<]{0,40}?)\s*</")
_END_RE = re.compile(rb"<(?:[\w.-]+:)?end\s*>\s*([^<]{0,40}?)\s*</")
_ENCODING_DECL_RE = re.compile(r"""^(\s*<\?xml[^>]*?encoding\s*=\s*)["'][^"']*["']""")
# C0/C1 controls, zero-width and bidi-override characters: they corrupt logs and
# terminals (ANSI escapes) or make a name display as something else (U+202E).
_UNSAFE_CHARS_RE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_CAPTURE_LOCK = threading.Lock()
_capture_depth = 0
_capture_saved_level = logging.NOTSET


def only_parse_errors(fn: Callable[..., ParsedItem]) -> Callable[..., ParsedItem]:
    """Make a parser entry point raise nothing but ReportParseError.

    Why: one report that trips a bug deep in a parser must become a rejected
    item with a reason, not a traceback that stops a cron run (and, for IMAP,
    blocks the mailbox on the same message every run). The reason names the
    error so the bug can still be reported and fixed.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> ParsedItem:
        try:
            return fn(*args, **kwargs)
        except ReportParseError:
            raise
        except RecursionError as e:
            raise ReportParseError("invalid aggregate report: XML nests too deeply") from e
        except MemoryError as e:
            raise ReportParseError("report too large to parse in memory") from e
        except Exception as e:  # noqa: BLE001 - see docstring: input must never crash the run
            log.debug("parser error", exc_info=True)
            raise ReportParseError(
                f"could not parse (internal {type(e).__name__}: {_short(e, 160)}); please report this input"
            ) from e

    return wrapper


def to_utf8(payload: bytes) -> bytes:
    """Re-encode a UTF-16 report (BOM-marked, as XML allows) as UTF-8.

    parsedmarc decodes bytes as UTF-8 ignoring errors, which turns UTF-16 into
    garbage; the report itself is valid, so it is transcoded, not rejected.
    """
    if not payload[:4].startswith(_UTF16_BOMS):
        return payload
    try:
        text = bigfile.materialize(payload).decode("utf-16")  # transcoding makes a copy anyway
    except UnicodeDecodeError as e:
        raise ReportParseError(f"invalid aggregate report: broken UTF-16 text ({e.reason})") from e
    text = _ENCODING_DECL_RE.sub(r'\1"UTF-8"', text, count=1)
    return text.encode("utf-8")


def _report_time(raw: bytes, what: str) -> datetime:
    text = raw.decode("ascii", "replace").strip()
    try:
        value = int(text)
        return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError) as e:
        raise ReportParseError(f"invalid aggregate report: {what} time {text[:40]!r} is not a Unix time") from e


def check_interval(begin: datetime, end: datetime) -> None:
    """Reject intervals no receiver can have sent: reversed, absurdly long, before
    DMARC existed, or in the future (a forged far-future report would also move
    every dashboard's default date range)."""
    if end < begin:
        raise ReportParseError(
            f"invalid aggregate report: interval ends before it begins ({begin:%Y-%m-%d %H:%M} > {end:%Y-%m-%d %H:%M} UTC)"
        )
    span = (end - begin).total_seconds()
    if span > MAX_SPAN_SECONDS:
        raise ReportParseError(
            f"invalid aggregate report: interval spans {span / 86400:.0f} days "
            f"({begin:%Y-%m-%d} to {end:%Y-%m-%d}); the limit is {MAX_SPAN_SECONDS // 86400} days"
        )
    if begin < MIN_REPORT_TIME:
        raise ReportParseError(
            f"invalid aggregate report: interval starts {begin:%Y-%m-%d}, before DMARC existed (broken clock?)"
        )
    latest = datetime.now(UTC).timestamp() + FUTURE_SLACK_SECONDS
    if end.timestamp() > latest:
        raise ReportParseError(f"invalid aggregate report: interval ends in the future ({end:%Y-%m-%d})")


def precheck_xml(xml: bytes) -> None:
    """Cheap byte-level checks before any XML parser sees the document.

    Each one stops something the parsers would handle badly: entity
    expansion (DOCTYPE), a truncated file that recovery would store half of,
    a giant text node, a report so large it is an attack, and a date range
    whose day split would explode (a 10-year span is 3,650 copies of every
    record).
    """
    opening = _FEEDBACK_OPEN_RE.search(xml, 0, 1024 * 1024)
    prolog = xml[: opening.start()] if opening else xml[: 64 * 1024]
    if _DOCTYPE_RE.search(prolog) or _ENTITY_RE.search(prolog):
        raise ReportParseError(
            "invalid aggregate report: it carries a DOCTYPE (DTDs and entities are refused: "
            "entity expansion and external entities are attacks, and no report needs one)"
        )
    if opening is None:
        raise ReportParseError("invalid aggregate report: no <feedback> element (not a DMARC report)")
    if not _FEEDBACK_CLOSE_RE.search(xml, max(0, len(xml) - 64 * 1024)):
        raise ReportParseError("invalid aggregate report: truncated XML (the closing </feedback> is missing)")
    if bigfile.first_span_without(xml, b"<", MAX_TEXT_RUN) != -1:
        raise ReportParseError(
            f"invalid aggregate report: a text or attribute value longer than {MAX_TEXT_RUN // (1024 * 1024)} MB"
        )
    # "record" occurs at least once per <record>: a count of the bare word
    # (memchr-fast) rules out almost every report before the exact pattern.
    records = bigfile.count(xml, b"record")
    if records > MAX_RECORDS:
        records = bigfile.count_matches(_RECORD_RE, xml)
    if records > MAX_RECORDS:
        raise ReportParseError(
            f"invalid aggregate report: {records:,} records in one report (limit {MAX_RECORDS:,}); "
            "no receiver sends that many, refused as a resource attack"
        )
    head = xml[: opening.start() + 1024 * 1024]
    b, e = _BEGIN_RE.search(head), _END_RE.search(head)
    if b and e:
        check_interval(_report_time(b.group(1), "begin"), _report_time(e.group(1), "end"))


def check_parsedmarc_budget(xml: bytes) -> None:
    """Refuse what parsedmarc would handle badly: too many rows for its dict-per-row
    memory use (see PARSEDMARC_MAX_ROWS), or elements nested far deeper than any
    report (it would build one dict per level; the streaming parser declines
    both, so this runs only on the fallback path, off the hot path)."""
    if _DEEP_RE.search(xml):
        raise ReportParseError(
            f"invalid aggregate report: elements nest more than {MAX_DEPTH} deep (reports nest about 6)"
        )
    records = sum(1 for _ in _RECORD_RE.finditer(xml))
    if records <= PARSEDMARC_MAX_ROWS:
        return
    days = 1
    b, e = _BEGIN_RE.search(xml, 0, 1024 * 1024), _END_RE.search(xml, 0, 1024 * 1024)
    if b and e:
        with contextlib.suppress(ReportParseError):
            span = (_report_time(e.group(1), "end") - _report_time(b.group(1), "begin")).total_seconds()
            days = max(1, math.ceil(span / 86400))
    raise ReportParseError(
        f"report too large for the fallback parser: {records:,} records x {days} day(s) "
        f"(limit {PARSEDMARC_MAX_ROWS:,} rows); the streaming parser declined it"
    )


@contextlib.contextmanager
def parsedmarc_warnings_enabled() -> Iterator[None]:
    """Let parsedmarc's WARNING records be created while it parses.

    The CLI sets the ``parsedmarc`` logger to ERROR to keep stderr quiet, and
    a logger below its level never creates the record, so a handler collecting
    "Could not parse record" would see nothing and a skipped record would be
    lost silently. Lowering ``parsedmarc.log`` (whose NullHandler keeps the
    records off stderr) for the duration fixes that; nested and concurrent
    uses share one saved level.
    """
    global _capture_depth, _capture_saved_level
    pd_log = logging.getLogger("parsedmarc.log")
    with _CAPTURE_LOCK:
        if _capture_depth == 0:
            _capture_saved_level = pd_log.level
            if pd_log.getEffectiveLevel() > logging.WARNING:
                pd_log.setLevel(logging.WARNING)
        _capture_depth += 1
    try:
        yield
    finally:
        with _CAPTURE_LOCK:
            _capture_depth -= 1
            if _capture_depth == 0:
                pd_log.setLevel(_capture_saved_level)


def _clean(value: Any) -> Any:
    """Line breaks and tabs become spaces; other unsafe characters become U+FFFD.

    Replaced rather than deleted so that ``exa\u200bmple.com`` stays visibly
    different from ``example.com`` (deleting would turn a lookalike into the
    owner's own domain).
    """
    if isinstance(value, str) and _UNSAFE_CHARS_RE.search(value):
        return _UNSAFE_CHARS_RE.sub(lambda m: " " if m.group() in "\t\r\n" else "\ufffd", value).strip()
    return value


def _clean_column(values: list[Any]) -> int:
    """Sanitise a column of strings (or of lists of dicts of strings) in place; return values changed."""
    changed = 0
    for i, v in enumerate(values):
        if isinstance(v, str):
            new = _clean(v)
            if new is not v:
                values[i] = new
                changed += 1
        elif isinstance(v, list):
            for d in v:
                if isinstance(d, dict):
                    for k, s in d.items():
                        new = _clean(s)
                        if new is not s:
                            d[k] = new
                            changed += 1
    return changed


def check_report(report: Report) -> Report:
    """Validate and sanitise a parsed report (either parser) before it is stored.

    Rejects what cannot be true (negative or absurd counts, impossible
    intervals, addresses that are not IPs); repairs what is merely odd and
    says so in ``report.warnings`` (control characters stripped from every
    string, an IPv6 zone id dropped). HTML or markdown in strings is kept
    verbatim: it is data, and every display must escape it.
    """
    check_interval(report.begin, report.end)
    recs = report.records
    if hasattr(recs, "arrow_batches"):
        # The streaming parser's Arrow-backed records: scan them vectorised and
        # only materialise Python lists when something must be repaired.
        if not _arrow_needs_repair(recs):
            recs = None
        else:
            recs = report.records = RecordBatch(**{n: list(v) for n, v in recs.columns().items()})
    if recs is not None:
        _check_record_lists(report, recs)
    changed = 0
    for name in ("org_name", "org_email", "org_extra_contact", "report_id", "generator", "xml_schema",
                 "xml_namespace"):
        old = getattr(report, name)
        new = _clean(old)
        if new is not old:
            setattr(report, name, new)
            changed += 1
    report.errors = [_clean(x) for x in report.errors]
    pol = report.policy
    cleaned = {f: _clean(getattr(pol, f)) for f in ("domain", "adkim", "aspf", "p", "sp", "np", "fo", "testing",
                                                    "discovery_method")}
    if any(cleaned[f] is not getattr(pol, f) for f in cleaned):
        report.policy = dataclasses.replace(pol, **cleaned)
        changed += 1
    if changed:
        report.warnings.append(f"control or invisible characters replaced in {changed} report field(s)")
    if not report.org_name or not report.report_id or not report.policy.domain:
        raise ReportParseError("invalid aggregate report: org_name, report_id or policy domain is empty")
    return report


_UNSAFE_RE2 = "[\\x00-\\x1f\\x7f-\\x9f\\x{200b}-\\x{200f}\\x{202a}-\\x{202e}\\x{2066}-\\x{2069}\\x{feff}]"
_STRING_COLUMNS = ("disposition", "policy_dkim", "policy_spf", "header_from", "envelope_from", "envelope_to")
_NESTED_COLUMNS = ("override_reasons", "dkim", "spf")


def _arrow_needs_repair(recs: Any) -> bool:
    """True when Arrow-backed records hold a bad count, a zone id or unsafe characters."""
    vetted = recs.needs_repair(max_count=MAX_COUNT, unsafe=_UNSAFE_CHARS_RE) if hasattr(recs, "needs_repair") else None
    if vetted is not None:
        # The streaming parser noted its distinct strings and count range while
        # reading: no per-report Arrow conversion or row scan (fastparse).
        return vetted
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        batches = recs.arrow_batches()
    except (OverflowError, pa.ArrowException):
        return True  # a value Arrow cannot hold (a count past int64): the list checks name it
    for b in batches:
        if b.num_rows == 0:
            continue
        names = b.schema.names
        lo, hi = pc.min_max(b.column(names.index("count"))).values()
        if (lo.as_py() or 0) < 0 or (hi.as_py() or 0) > MAX_COUNT:
            return True
        if pc.any(pc.match_substring(b.column(names.index("source_ip")), "%")).as_py():
            return True
        strings = [b.column(names.index(n)) for n in _STRING_COLUMNS]
        for n in _NESTED_COLUMNS:
            flat = pc.list_flatten(b.column(names.index(n)))
            strings.extend(flat.field(i) for i in range(flat.type.num_fields))
        if any(pc.any(pc.match_substring_regex(col, _UNSAFE_RE2)).as_py() for col in strings):
            return True
    return False


def _check_record_lists(report: Report, recs: RecordBatch) -> None:
    """List-based record checks and repairs (parsedmarc path, or fast records needing repair)."""
    if len(recs) > MAX_RECORDS:
        raise ReportParseError(f"invalid aggregate report: {len(recs):,} records (limit {MAX_RECORDS:,})")
    for c in recs.count:
        if not isinstance(c, int) or c < 0 or c > MAX_COUNT:
            what = "negative" if isinstance(c, int) and c < 0 else "implausible"
            raise ReportParseError(
                f"invalid aggregate report: {what} message count {str(c)[:30]} in a record "
                f"(allowed 0 to {MAX_COUNT:,})"
            )
    zoned = 0
    for i, ip in enumerate(recs.source_ip):
        bare = ip.split("%", 1)[0] if "%" in ip else ip
        try:
            addr = ipaddress.ip_address(bare)
        except ValueError as e:
            raise ReportParseError(
                f"invalid aggregate report: source_ip {_clean(ip)[:60]!r} is not an IP address"
            ) from e
        if bare is not ip:
            recs.source_ip[i] = str(addr)
            zoned += 1
    if zoned:
        report.warnings.append(f"IPv6 zone id dropped from {zoned} source address(es) (meaningless outside one host)")
    changed = sum(_clean_column(getattr(recs, name)) for name in (*_STRING_COLUMNS, *_NESTED_COLUMNS))
    if changed:
        report.warnings.append(f"control or invisible characters replaced in {changed} record value(s)")


# Wrapped here, after every helper exists, so the entry point's body stays plain.
parse_payload = only_parse_errors(parse_payload)
