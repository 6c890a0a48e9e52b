"""One report payload (bytes) → a normalized ``ParsedItem``: the parse stage's entry point.

The streaming parser (``parse.stream`` via ``parse.fast``) runs first;
parsedmarc (``parse.reference``, always offline) judges whatever it declines;
``parse.guards`` checks the input before and the report after either.
Containers (zip archives with several members, mail, mbox) are opened by
``dmarclens.sources``; by the time bytes reach here they are one report,
possibly gzip/zip-compressed.
"""

from __future__ import annotations

import logging
import re

from dmarclens.core import bigfile
from dmarclens.core.errors import ReportParseError
from dmarclens.core.models import ParsedItem, Report
from dmarclens.core.payload import decompress
from dmarclens.parse.fast import parse_aggregate_fast
from dmarclens.parse.formats import prepare_aggregate_xml, sniff
from dmarclens.parse.guards import check_report, only_parse_errors, precheck_xml, short
from dmarclens.parse.reference import parse_prepared_with_parsedmarc
from dmarclens.parse.stream import FastPathDeclined

log = logging.getLogger(__name__)


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


_ENCODING_DECL_RE = re.compile(r"""^(\s*<\?xml[^>]*?encoding\s*=\s*)["'][^"']*["']""")


def parse_payload(data: bigfile.Buffer, *, fallback_org: str | None = None) -> ParsedItem:
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


def _parse_json(payload: bigfile.Buffer) -> ParsedItem:
    import parsedmarc

    try:
        tls = parsedmarc.parse_smtp_tls_report_json(bigfile.materialize(payload))  # json.loads wants bytes
    except parsedmarc.InvalidSMTPTLSReport as e:
        raise ReportParseError(f"JSON that is not an SMTP TLS report: {short(e)}") from e
    return ParsedItem(
        kind="smtp_tls",
        summary=f"SMTP TLS report from {tls.get('organization_name')} id {tls.get('report_id')}",
    )


def parse_aggregate(xml: bigfile.Buffer, *, fallback_org: str | None = None) -> Report:
    """The ingest path: the streaming parser (``dmarclens.parse.stream``) first,
    parsedmarc for whatever it declines; each fallback is logged and the
    stored report says which parser made it (``reports.parser``)."""
    prepared = prepare_aggregate_xml(xml, fallback_org=fallback_org)
    try:
        return parse_aggregate_fast(prepared)
    except FastPathDeclined as e:
        log.info("fast parser declined (%s); parsing with parsedmarc", e)
    return parse_prepared_with_parsedmarc(prepared)


def to_utf8(payload: bigfile.Buffer) -> bigfile.Buffer:
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


# Wrapped here, after every helper exists, so the entry point's body stays plain.
parse_payload = only_parse_errors(parse_payload)
