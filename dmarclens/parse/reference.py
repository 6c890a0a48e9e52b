"""The reference parser: parsedmarc, always offline, normalized into a ``Report``.

parsedmarc does the format work for whatever the streaming parser declines
(broken XML, odd encodings, the draft schema, recovery) and is what the
streaming parser is tested against (``tests/perf/test_differential.py``).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

from dmarclens.core import bigfile
from dmarclens.core.errors import ReportParseError
from dmarclens.core.models import PolicyPublished, RecordBatch, Report
from dmarclens.parse.formats import detect_format, is_draft_schema, prepare_aggregate_xml
from dmarclens.parse.guards import check_parsedmarc_budget, short

log = logging.getLogger(__name__)


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


def parse_aggregate_xml(xml: bytes, *, fallback_org: str | None = None) -> Report:
    """Parse aggregate XML with parsedmarc (offline) and normalize it: the reference."""
    return parse_prepared_with_parsedmarc(prepare_aggregate_xml(xml, fallback_org=fallback_org))


def parse_prepared_with_parsedmarc(xml: bigfile.Buffer) -> Report:
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
        raise ReportParseError(f"invalid aggregate report: {short(e)}") from e
    finally:
        pd_log.removeHandler(collector)
    report = normalize(parsed, draft=is_draft_schema(xml))
    if collector.messages:
        report.warnings.append(
            f"{len(collector.messages)} record(s) skipped as unparseable: {short(Exception(collector.messages[0]), 160)}"
        )
    return report


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


_CAPTURE_LOCK = threading.Lock()


_capture_depth = 0


_capture_saved_level = logging.NOTSET


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
