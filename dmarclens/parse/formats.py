"""What a payload is (aggregate XML, TLS-RPT JSON, a failure report), which
aggregate dialect it speaks (RFC 7489, RFC 9990, the pre-RFC draft), and the
clean-ups both parsers get before they see it."""
from __future__ import annotations

import re
from typing import Any

from dmarclens.core import bigfile
from dmarclens.core.models import ReportFormat

RFC9990_NS = "urn:ietf:params:xml:ns:dmarc-2.0"


_BOMS = (b"\xef\xbb\xbf",)


_DRAFT_RE = re.compile(rb"<identities[\s>]")


_FEEDBACK_RE = re.compile(rb"(?im)^feedback-type\s*:")


def sniff(data: bigfile.Buffer) -> str:
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


def is_draft_schema(xml: bigfile.Buffer) -> bool:
    """The pre-RFC DMARC wiki schema: ``<identities>``, or no ``<version>`` and SPF
    results without the ``<scope>`` RFC 7489 added. Legacy reports that merely omit
    ``<version>`` still carry ``<scope>``, so they stay rfc7489."""
    if bigfile.search(_DRAFT_RE, xml):
        return True
    return b"<version" not in xml[:4096] and bigfile.contains(xml, b"<spf>") and not bigfile.contains(xml, b"<scope>")


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


_EMPTY_REASON_RE = re.compile(rb"<reason\s*/>|<reason>\s*</reason>")


def prepare_aggregate_xml(xml: bigfile.Buffer, *, fallback_org: str | None = None) -> bigfile.Buffer:
    """Clean-ups applied before either parser sees the XML."""
    if fallback_org and re.search(rb"<org_name>\s*</org_name>|<org_name\s*/>", xml[:8192]):
        # Some receivers leave org_name empty; the report mail's sender domain
        # is the best stand-in. parsedmarc would use the email.
        xml = re.sub(rb"<org_name>\s*</org_name>|<org_name\s*/>",
                     b"<org_name>" + fallback_org.encode() + b"</org_name>", xml, count=1)
    # An empty <reason/> carries nothing, but parsedmarc drops the whole record
    # over it (its comment unwrapping hits None); remove it first.
    # A mapped big file is copied into memory only if there is something to remove.
    if bigfile.contains(xml, b"<reason") and (not bigfile.is_mapped(xml) or bigfile.search(_EMPTY_REASON_RE, xml)):
        xml = _EMPTY_REASON_RE.sub(b"", bigfile.materialize(xml))
    return xml
