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

import io
import logging
import re
import zipfile
import zlib
from datetime import UTC, date, datetime
from typing import Any

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


def decompress(data: bytes, *, limit: int = MAX_REPORT_BYTES) -> bytes:
    """Undo gzip or single-member zip compression, refusing to inflate past ``limit``."""
    if data.startswith(_GZIP_MAGIC):
        return gunzip_bounded(data, limit=limit)
    if data.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = [i for i in zf.infolist() if not i.is_dir()]
                if not names:
                    raise ReportParseError("zip archive is empty")
                if len(names) > 1:
                    raise ReportParseError(
                        f"zip archive holds {len(names)} files; expected one report"
                    )
                return read_zip_member(zf, names[0], limit=limit)
        except zipfile.BadZipFile as e:
            raise ReportParseError(f"corrupt zip archive: {e}") from e
    return data


def gunzip_bounded(data: bytes, *, limit: int = MAX_REPORT_BYTES) -> bytes:
    d = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise ReportParseError(f"corrupt gzip data: {e}") from e
    if len(out) > limit:
        raise ReportParseError(f"gzip expands past {limit // (1024 * 1024)} MB; refused as a bomb")
    if not d.eof:
        raise ReportParseError("truncated gzip data (stream ends early)")
    return out


def read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, limit: int = MAX_REPORT_BYTES) -> bytes:
    if info.file_size > limit:
        raise ReportParseError(
            f"zip member {info.filename!r} expands to {info.file_size} bytes; refused as a bomb"
        )
    try:
        with zf.open(info) as fh:
            out = fh.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise ReportParseError(f"corrupt zip member {info.filename!r}: {e}") from e
    if len(out) > limit:
        raise ReportParseError(f"zip member {info.filename!r} expands past the limit; refused as a bomb")
    return out


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
    if not data or not data.strip():
        raise ReportParseError("empty file")
    payload = decompress(data)
    if not payload.strip():
        raise ReportParseError("empty report after decompression")
    kind = sniff(payload)
    if kind == "xml":
        return ParsedItem(kind="aggregate", report=parse_aggregate_xml(payload, fallback_org=fallback_org), raw_xml=payload)
    if kind == "json":
        return _parse_json(payload)
    if kind == "feedback":
        return ParsedItem(kind="failure", summary="DMARC failure (RUF) report")
    raise ReportParseError("not a DMARC aggregate report (neither XML, gzip, zip nor TLS-RPT JSON)")


def _parse_json(payload: bytes) -> ParsedItem:
    import parsedmarc

    try:
        tls = parsedmarc.parse_smtp_tls_report_json(payload)
    except parsedmarc.InvalidSMTPTLSReport as e:
        raise ReportParseError(f"JSON that is not an SMTP TLS report: {_short(e)}") from e
    return ParsedItem(
        kind="smtp_tls",
        summary=f"SMTP TLS report from {tls.get('organization_name')} id {tls.get('report_id')}",
    )


def parse_aggregate_xml(xml: bytes, *, fallback_org: str | None = None) -> Report:
    """Parse aggregate XML with parsedmarc (offline) and normalize it."""
    import parsedmarc

    if fallback_org and re.search(rb"<org_name>\s*</org_name>|<org_name\s*/>", xml[:8192]):
        # Some receivers leave org_name empty; the report mail's sender domain
        # is the best stand-in (REPORTERS.md). parsedmarc would use the email.
        xml = re.sub(rb"<org_name>\s*</org_name>|<org_name\s*/>",
                     b"<org_name>" + fallback_org.encode() + b"</org_name>", xml, count=1)
    # An empty <reason/> carries nothing, but parsedmarc drops the whole record
    # over it (its comment unwrapping hits None); remove it first.
    xml = _EMPTY_REASON_RE.sub(b"", xml)
    collector = _RecordWarnings()
    pd_log = logging.getLogger("parsedmarc")
    pd_log.addHandler(collector)
    try:
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
    if _DRAFT_RE.search(xml):
        return True
    return b"<version" not in xml[:4096] and b"<spf>" in xml and b"<scope>" not in xml


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
