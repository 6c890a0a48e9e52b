"""Hostile-input guards around both parsers.

A rua address is public: anyone can mail it anything, and the ingester runs
unattended. These checks run around both parsers (streaming and parsedmarc)
and turn every input into either a sane Report or one ReportParseError with a
plain reason. Decisions per case are in docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import logging
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dmarclens.core import bigfile
from dmarclens.core.errors import ReportParseError
from dmarclens.core.models import ParsedItem, RecordBatch, Report
from dmarclens.core.payload import MAX_RECORDS, UNSAFE_CHARS_RE

log = logging.getLogger(__name__)


def short(err: Exception, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


_FEEDBACK_OPEN_RE = re.compile(rb"<(?:[\w.-]+:)?feedback[\s>/]")


_FEEDBACK_CLOSE_RE = re.compile(rb"</(?:[\w.-]+:)?feedback\s*>")


_DOCTYPE_RE = re.compile(rb"<!DOCTYPE", re.I)


_ENTITY_RE = re.compile(rb"<!ENTITY", re.I)


_RECORD_RE = re.compile(rb"<(?:[\w.-]+:)?record[\s>]")


# MAX_DEPTH + 1 opening tags with only text between them: each one nests deeper.
_DEEP_RE = re.compile(rb"(?:<[A-Za-z][^<>/]*>[^<]*){%d}" % (MAX_DEPTH + 1))


_BEGIN_RE = re.compile(rb"<(?:[\w.-]+:)?begin\s*>\s*([^<]{0,40}?)\s*</")


_END_RE = re.compile(rb"<(?:[\w.-]+:)?end\s*>\s*([^<]{0,40}?)\s*</")


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
                f"could not parse (internal {type(e).__name__}: {short(e, 160)}); please report this input"
            ) from e

    return wrapper


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


def precheck_xml(xml: bigfile.Buffer) -> None:
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


def _clean(value: Any) -> Any:
    """Line breaks and tabs become spaces; other unsafe characters become U+FFFD.

    Replaced rather than deleted so that ``exa\u200bmple.com`` stays visibly
    different from ``example.com`` (deleting would turn a lookalike into the
    owner's own domain).
    """
    if isinstance(value, str) and UNSAFE_CHARS_RE.search(value):
        return UNSAFE_CHARS_RE.sub(lambda m: " " if m.group() in "\t\r\n" else "\ufffd", value).strip()
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
    recs: RecordBatch | None = report.records
    if hasattr(recs, "arrow_batches"):
        # The streaming parser's Arrow-backed records: scan them vectorised and
        # only materialise Python lists when something must be repaired.
        if not _arrow_needs_repair(recs):
            recs = None
        else:
            recs = report.records = RecordBatch(**{n: list(v) for n, v in report.records.columns().items()})
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
    vetted = recs.needs_repair(max_count=MAX_COUNT, unsafe=UNSAFE_CHARS_RE) if hasattr(recs, "needs_repair") else None
    if vetted is not None:
        # The streaming parser noted its distinct strings and count range while
        # reading: no per-report Arrow conversion or row scan (parse.stream).
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
