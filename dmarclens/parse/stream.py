"""Streaming parser for aggregate reports: the hot path of ``dmarclens ingest``.

Why a second parser next to parsedmarc: parsedmarc turns the whole document
into nested dicts twice (xmltodict) and looks up every IP while parsing, so a
50,000-record report takes ~14 s and 430 MB. This module walks the XML once
with ``lxml.etree.iterparse``, clears each ``<record>`` as soon as it is read,
and keeps one tuple per row only until ``CHUNK_ROWS`` rows become an Arrow
record batch, so a report of any size is held as compact Arrow memory, never
as one Python object per record. ``dmarclens.parse.fast`` decides whether one
process parses a report or several parse its parts.

parsedmarc stays the reference. The output here must be exactly what
``parse.reference.normalize(parsedmarc.parse_aggregate_report_xml(...))``
gives, including parsedmarc's defaults (alignment modes ``r``, ``sp`` = ``p``,
DKIM selector ``none``, SPF scope ``mfrom``, ``envelope_from`` taken from the
last SPF result), its clean-ups (lower-cased result words and header_from,
report_id without ``<>`` and ``@suffix``, org_name reduced to its base
domain) and its day split of reports longer than 24 hours. Whatever this
parser cannot vouch for (broken XML, other encodings, attributes, comments, a
DOCTYPE, namespaces below the root, missing or repeated elements, odd IP
spellings, a record parsedmarc would skip...) raises ``FastPathDeclined`` and
``parse.report.parse_aggregate`` hands the bytes to parsedmarc;
``tests/perf/test_differential.py`` holds the two to the same output.

Security: the parser never loads a DTD, never resolves entities, never touches
the network and keeps libxml2's size limits (``huge_tree=False``); documents
with a DOCTYPE are declined here and rejected by parsedmarc.
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import TYPE_CHECKING, Any

from dmarclens.core import bigfile
from dmarclens.core.domains import base_domain
from dmarclens.core.models import PolicyPublished
from dmarclens.core.records import EPOCH, RowChunk, micros, source_ips
from dmarclens.core.spill import SpilledBatches

if TYPE_CHECKING:
    import pyarrow as pa


_SPLIT_THRESHOLD_SECONDS = 24.0 * 3600  # parsedmarc's normalize_timespan_threshold_hours


_MISSING: Any = object()


# Same matching rule as parsedmarc's, which decides xml_namespace.
_NS_DECL = re.compile(r"""xmlns(?::[a-zA-Z_][\w.-]*)?\s*=\s*["']([^"']+)["']""")


_FIRST_TAG = re.compile(rb"<[^?!/]")


_ROOT_TAG = re.compile(rb"<feedback[\s/>]")


_ATTRIBUTE = re.compile(rb"=\s*[\"']")


_XML_DECL = re.compile(
    rb"""<\?xml\s+version\s*=\s*(["'])1\.0\1"""
    rb"""(?:\s+encoding\s*=\s*(["'])[A-Za-z][A-Za-z0-9._-]*\2)?"""
    rb"""(?:\s+standalone\s*=\s*(["'])(?:yes|no)\3)?\s*\?>"""
)


_UTF8_BOM = b"\xef\xbb\xbf"


class FastPathDeclined(Exception):
    """The streaming parser will not vouch for this input; parsedmarc decides.

    Not an error: the message names what was unusual so the fallback can be
    logged and counted.
    """


def _lower(value: str | None) -> str | None:
    """parse.reference.normalize's clean-up of a word: stripped, lower case, '' → None."""
    if value is None:
        return None
    text = value.strip().lower()
    return text or None


def report_time(ts: int) -> datetime:
    """A report timestamp as parsedmarc turns it into UTC.

    parsedmarc renders the epoch as local wall time and parses it back, which
    loses the DST ``fold``; doing the same keeps an ambiguous autumn hour
    identical to the reference in non-UTC time zones.
    """
    return datetime.fromtimestamp(ts).replace(fold=0).astimezone(UTC)


def day_split(begin: datetime, end: datetime, count: int) -> list[tuple[datetime, datetime, int]]:
    """Share ``count`` messages over the UTC days of ``[begin, end)``.

    Each day gets its share of the interval's seconds; shares are rounded
    down and the messages left over go one each to the days with the largest
    fractional parts (ties to the earlier day), so the parts add up to
    ``count`` exactly. Days whose part is 0 are left out. This is the rule
    parsedmarc applies to reports longer than 24 hours, written so the two
    agree to the message.
    """
    if count < 0:
        raise FastPathDeclined("negative message count in a report longer than a day")
    total = (end - begin).total_seconds()
    if total <= 0 or count == 0:
        return []
    spans: list[tuple[datetime, datetime, float]] = []
    midnight = datetime(begin.year, begin.month, begin.day, tzinfo=begin.tzinfo)
    while midnight < end:
        next_midnight = midnight + timedelta(days=1)
        lo = begin if begin > midnight else midnight
        hi = end if end < next_midnight else next_midnight
        seconds = (hi - lo).total_seconds()
        if seconds > 0:
            spans.append((lo, hi, seconds))
        midnight = next_midnight
    exact = [(s / total) * count for _, _, s in spans]
    parts = [int(x) for x in exact]
    left = count - sum(parts)
    if left:
        by_fraction = sorted(range(len(spans)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
        for i in by_fraction[:left]:
            parts[i] += 1
    return [(lo, hi, n) for (lo, hi, _), n in zip(spans, parts, strict=True) if n > 0]


def _leaf_text(elem: Any) -> str | None:
    """Text of an element xmltodict would turn into a plain string (or None).

    An element with child elements becomes a dict in parsedmarc's view; rather
    than mimic what each caller does with a dict, the fast path declines.
    """
    if len(elem):
        raise FastPathDeclined(f"element <{_local(elem.tag)}> has child elements")
    text = elem.text
    if text is None:
        return None
    return text.strip() or None


def _local(tag: Any) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else "?"


def _children(elem: Any, q: str, wanted: frozenset[str]) -> dict[str, Any]:
    """Named children of a report-level element; a repeated one is declined."""
    out: dict[str, Any] = {}
    cut = len(q)
    for child in elem:
        tag = child.tag
        if not tag.startswith(q):
            continue
        name = tag[cut:]
        if name in wanted:
            if name in out:
                raise FastPathDeclined(f"<{name}> appears twice in <{_local(elem.tag)}>")
            out[name] = child
    return out


def prescan(xml: bigfile.Buffer) -> tuple[int, str | None]:
    """Decide from the bytes alone whether the streaming path may run.

    Returns the offset just past the root start tag and parsedmarc's
    ``xml_namespace`` (the first ``xmlns`` value in the document). Only checks
    that lxml cannot do during the parse live here, each one a substring or
    simple pattern search: comments, processing instructions and namespace
    declarations below the root are caught by ``iterparse`` events instead.
    """
    # Slices, not startswith: ``xml`` may be a mapped file (dmarclens.core.bigfile).
    start = len(_UTF8_BOM) if xml[: len(_UTF8_BOM)] == _UTF8_BOM else 0
    if xml[start: start + 5] == b"<?xml" and not _XML_DECL.match(xml, start):
        raise FastPathDeclined("unusual XML declaration")
    m = _FIRST_TAG.search(xml)
    if m is None:
        raise FastPathDeclined("no element")
    if b"<!DOCTYPE" in xml[: m.start()]:
        raise FastPathDeclined("DOCTYPE declaration")
    if not _ROOT_TAG.match(xml, m.start()):
        raise FastPathDeclined("root element is not <feedback>")
    head_end = xml.find(b">", m.start())
    if head_end == -1:
        raise FastPathDeclined("unterminated root tag")
    head_end += 1
    # parsedmarc rewrites '<?xml ...>' lines and drops xs:schema tags with
    # regular expressions over the raw text; below the root such text can
    # only hide in CDATA sections (comments are declined during the parse).
    if bigfile.find(xml, b"<![CDATA[", head_end) != -1:
        raise FastPathDeclined("CDATA section")
    if bigfile.search(_ATTRIBUTE, xml, head_end):
        raise FastPathDeclined("attributes below the root")
    namespace = None
    head = xml[:head_end]
    if b"xmlns" in head:
        found = _NS_DECL.search(head.decode("utf-8", "ignore"))
        if found is None:
            raise FastPathDeclined("unreadable namespace declaration")
        namespace = found.group(1)
        if b"xmlns:xs" in head and bigfile.find(xml, b"xs:schema", head_end) != -1:
            raise FastPathDeclined("xs:schema element")
    return head_end, namespace


_REPORT_LEVEL = frozenset({"report_metadata", "policy_published", "version", "record"})


_META = frozenset({"org_name", "email", "extra_contact_info", "report_id", "date_range", "generator"})


_POLICY = frozenset({"domain", "adkim", "aspf", "p", "sp", "pct", "fo", "np", "testing", "discovery_method"})


_spill_dir: str | None = None


def set_spill_dir(directory: str | None) -> None:
    """Write the Arrow batches of reports parsed from now on to files in
    ``directory`` (``dmarclens.core.spill``) instead of keeping them in memory;
    ``None`` turns it off. The big-report child sets it for its one report."""
    global _spill_dir
    _spill_dir = directory


class Pieces:
    """A read-only stream over spans ``(buffer, start, stop)`` of buffers: a
    part of a split report is fed to the parser without copying its megabytes
    into a new string first; a span of a mapped file (``dmarclens.core.bigfile``)
    is read from the file, never through the map."""

    def __init__(self, *spans: tuple[bytes | Any, int, int]) -> None:
        self._spans: list[list[Any]] = [[buf, start, stop] for buf, start, stop in spans if stop > start]

    def read(self, n: int = -1) -> bytes:
        out: list[bytes] = []
        while self._spans and n != 0:
            span = self._spans[0]
            buf, pos, stop = span
            take = stop - pos if n < 0 else min(n, stop - pos)
            out.append(bigfile.read_at(buf, pos, take))
            span[1] = pos + take
            if pos + take == stop:
                self._spans.pop(0)
            if n > 0:
                n -= take
        return b"".join(out)


@dataclass
class Part:
    """What parsing one document (or one part of a split report) produced."""

    meta: dict[str, Any] | None
    policy: PolicyPublished | None
    version: Any
    begin: datetime | None
    end: datetime | None
    batches: list[Any] | SpilledBatches
    tail: list[tuple[Any, ...]]
    rows: int
    messages: int
    min_begin: int | None
    max_end: int | None
    min_count: int | None
    max_count: int | None
    texts: set[str] | None
    records: int
    extra: Any = None  # what the part hook returned (see set_part_hook)

    def source_ips(self) -> set[str]:
        return source_ips(self.tail, self.batches)


class Parser:
    """One report's parse state; ``run`` streams the records through it."""

    def __init__(self, xml: bigfile.Buffer | Pieces, xml_namespace: str | None, chunk_rows: int) -> None:
        if isinstance(xml, Pieces):
            self.source: BytesIO | Pieces = xml
        elif isinstance(xml, bytes):
            self.source = BytesIO(xml)
        else:  # a mapped file: read a window at a time, never through the map
            self.source = Pieces((xml, 0, len(xml)))
        self.xml_namespace = xml_namespace
        self.chunk_rows = chunk_rows
        self.meta: dict[str, Any] | None = None
        self.policy: PolicyPublished | None = None
        self.version: Any = _MISSING
        self.q = ""
        self.begin: datetime | None = None
        self.end: datetime | None = None
        self.split = False
        self.whole: tuple[int, int, int] = (0, 0, 0)
        self.rows: list[tuple[Any, ...]] = []
        self.batches: list[pa.RecordBatch] | SpilledBatches = SpilledBatches(_spill_dir) if _spill_dir else []
        self.n_rows = 0
        self.messages = 0
        self.min_begin: int | None = None
        self.max_end: int | None = None
        self.min_count: int | None = None
        self.max_count: int | None = None
        self.texts: set[str] = set()  # every distinct string stored (IPs aside)
        self.texts_complete = True
        self.records_seen = 0

    # ---- driver

    def run(self) -> Parser:
        from lxml import etree

        try:
            context = etree.iterparse(
                self.source, events=("end", "start-ns", "comment", "pi"),
                tag=tuple("{*}" + t for t in _REPORT_LEVEL),
                encoding="utf-8", resolve_entities=False, no_network=True, huge_tree=False,
                load_dtd=False, dtd_validation=False, remove_comments=False, collect_ids=False,
                remove_blank_text=True,  # whitespace between elements: no text nodes to build or skip
            )
            root = None
            rec_tag = ""
            handle: Any = None
            namespaces = 0
            for event, elem in context:
                if event != "end":
                    if event == "start-ns":
                        namespaces += 1
                    elif elem.getparent() is not None:
                        # xmltodict drops comments and joins the text around
                        # them; rather than mimic that, leave it to parsedmarc.
                        raise FastPathDeclined(f"{event} below the root")
                    continue
                if root is None:
                    root = self._root_of(elem)
                    rec_tag = self.q + "record"
                if elem.getparent() is not root:
                    raise FastPathDeclined(f"<{_local(elem.tag)}> nested below the top level")
                tag = elem.tag
                if tag == rec_tag:
                    if handle is None:
                        if self.meta is None:
                            raise FastPathDeclined("a <record> before <report_metadata>")
                        handle = self._record_handler()
                    self.records_seen += 1
                    handle(elem)
                    elem.clear()
                    while elem.getprevious() is not None:
                        del root[0]
                elif tag == self.q + "report_metadata":
                    if self.meta is not None:
                        raise FastPathDeclined("two <report_metadata>")
                    self._metadata(elem)
                elif tag == self.q + "policy_published":
                    if self.policy is not None:
                        raise FastPathDeclined("two <policy_published>")
                    self._policy(elem)
                elif tag == self.q + "version":
                    if self.version is not _MISSING:
                        raise FastPathDeclined("two <version>")
                    self.version = _leaf_text(elem)
                else:
                    raise FastPathDeclined(f"<{_local(tag)}> in a foreign namespace")
            if root is not None and namespaces != len(root.nsmap):
                # xmltodict would see these declarations as attributes.
                raise FastPathDeclined("namespace declaration below the root")
        except etree.LxmlError as e:
            raise FastPathDeclined(f"XML error: {e}") from e
        except (ValueError, OverflowError, OSError) as e:
            raise FastPathDeclined(f"{type(e).__name__}: {e}") from e
        return self

    def _root_of(self, elem: Any) -> Any:
        root = elem
        while (parent := root.getparent()) is not None:
            root = parent
        if root.prefix is not None or _local(root.tag) != "feedback":
            raise FastPathDeclined("root element is not <feedback>")
        nsmap = root.nsmap
        default = nsmap.get(None)
        if default is not None and any(p is not None and uri == default for p, uri in nsmap.items()):
            raise FastPathDeclined("a prefix bound to the default namespace")
        self.q = "{" + default + "}" if default else ""
        return root

    # ---- report level

    def _metadata(self, elem: Any) -> None:
        q = self.q
        kids = _children(elem, q, _META)
        errors: list[str] = []
        for child in elem:
            if child.tag == q + "error":
                text = _leaf_text(child)
                if text:
                    errors.append(text)
        if "org_name" not in kids or "report_id" not in kids or "date_range" not in kids or "email" not in kids:
            raise FastPathDeclined("report_metadata lacks org_name, email, report_id or date_range")
        email = _leaf_text(kids["email"])
        org = _leaf_text(kids["org_name"])
        if org is None and email is not None:
            org = email.split("@")[-1]
        if org is not None and " " not in org:
            base = base_domain(org)
            if base is not None:
                org = base
        if not org:
            raise FastPathDeclined("no org_name")
        report_id = _leaf_text(kids["report_id"])
        if report_id is None:
            raise FastPathDeclined("empty report_id")
        report_id = report_id.replace("<", "").replace(">", "").split("@")[0]
        dr = _children(kids["date_range"], q, frozenset({"begin", "end"}))
        if "begin" not in dr or "end" not in dr:
            raise FastPathDeclined("date_range lacks begin or end")
        b_text, e_text = _leaf_text(dr["begin"]), _leaf_text(dr["end"])
        if b_text is None or e_text is None:
            raise FastPathDeclined("empty begin or end")
        begin_ts = int(b_text.split(".")[0])
        end_ts = int(e_text.split(".")[0])
        begin, end = report_time(begin_ts), report_time(end_ts)
        if not (1000 <= begin.year <= 9999 and 1000 <= end.year <= 9999):
            raise FastPathDeclined("report dates outside years 1000-9999")
        self.begin, self.end = begin, end
        self.split = (end_ts - begin_ts) > _SPLIT_THRESHOLD_SECONDS
        self.whole = ((begin.date() - EPOCH).days, micros(begin), micros(end))
        self.meta = {
            "org_name": org,
            "org_email": email,
            "org_extra_contact": _leaf_text(kids["extra_contact_info"]) if "extra_contact_info" in kids else None,
            "report_id": report_id,
            "errors": errors,
            "generator": _leaf_text(kids["generator"]) if "generator" in kids else None,
        }
        elem.clear()

    def _policy(self, elem: Any) -> None:
        kids = _children(elem, self.q, _POLICY)
        if "domain" not in kids or "p" not in kids:
            raise FastPathDeclined("policy_published lacks domain or p")
        raw = {name: _leaf_text(child) for name, child in kids.items()}
        domain = _lower(raw["domain"])
        if not domain:
            raise FastPathDeclined("empty policy domain")
        p = raw["p"]
        self.policy = PolicyPublished(
            domain=domain,
            adkim=_lower(raw.get("adkim")) or "r",
            aspf=_lower(raw.get("aspf")) or "r",
            p=_lower(p),
            sp=_lower(raw["sp"] if raw.get("sp") is not None else p),
            np=_lower(raw.get("np")),
            pct=_opt_int(raw.get("pct")),
            fo=raw.get("fo"),
            testing=_lower(raw.get("testing")),
            discovery_method=_lower(raw.get("discovery_method")),
        )
        elem.clear()

    # ---- records

    def _record_handler(self) -> Any:
        """Build the per-record function with every constant bound locally.

        This is the loop that runs 50,000 times for a big report, so it is
        one flat function over local names: no helper calls per element, one
        tuple appended per row, and small caches that map each distinct raw
        text (``"pass"``, a domain...) to its cleaned form once.
        """
        q = self.q
        t_row, t_ids, t_idents, t_auth = q + "row", q + "identifiers", q + "identities", q + "auth_results"
        t_ip, t_count, t_pe = q + "source_ip", q + "count", q + "policy_evaluated"
        t_disp, t_dkim, t_spf, t_reason = q + "disposition", q + "dkim", q + "spf", q + "reason"
        t_hf, t_ef, t_et = q + "header_from", q + "envelope_from", q + "envelope_to"
        t_dom, t_sel, t_scope, t_res = q + "domain", q + "selector", q + "scope", q + "result"
        t_type, t_comment = q + "type", q + "comment"
        missing = _MISSING
        declined = FastPathDeclined
        inet_pton, af4, af6 = socket.inet_pton, socket.AF_INET, socket.AF_INET6
        split = self.split
        begin, end = self.begin, self.end
        if begin is None or end is None:  # set with the metadata, which a handler never comes before
            raise FastPathDeclined("a <record> before the report's date range")
        day0, begin0, end0 = self.whole
        split_cache: dict[int, list[tuple[int, int, int, int]]] = {}
        limit = self.chunk_rows
        flush = self._flush
        parser = self

        # raw element text → cleaned value, computed once per distinct text
        words: dict[str | None, tuple[str | None, bool]] = {}
        low: dict[str | None, str | None] = {None: None}
        low_hdr: dict[str | None, str | None] = {None: None}
        selectors: dict[str | None, str] = {None: "none"}

        texts = self.texts

        def note(value: Any) -> None:
            # Remember each distinct stored string (a handful per report), so
            # ColumnarRecords.needs_repair can vet them without a row scan.
            if isinstance(value, tuple):
                value = value[0]
            if value is not None:
                if len(texts) < 200_000:
                    texts.add(value)
                else:
                    parser.texts_complete = False

        def word(raw: str | None) -> tuple[str | None, bool]:
            hit = words.get(raw)
            if hit is None:
                text = raw.strip() if raw is not None else None
                if not text:
                    hit = (None, False)
                else:
                    lowered = text.lower()
                    hit = (_lower(lowered), lowered == "pass")
                if len(words) < 10_000:
                    words[raw] = hit
                note(hit)
            return hit

        def lowered(raw: str | None) -> str | None:
            hit = low.get(raw, missing)
            if hit is missing:
                text = raw.strip() if raw is not None else None
                hit = _lower(text) if text else None
                if len(low) < 100_000:
                    low[raw] = hit
                note(hit)
            return hit

        def lowered_twice(raw: str | None) -> str | None:
            # parsedmarc lower-cases header_from (and the backfilled
            # envelope_from) before parse.reference.normalize lower-cases again.
            hit = low_hdr.get(raw, missing)
            if hit is missing:
                text = raw.strip() if raw is not None else None
                hit = _lower(text.lower()) if text else None
                if len(low_hdr) < 100_000:
                    low_hdr[raw] = hit
                note(hit)
            return hit

        def selector(raw: str | None) -> str:
            hit = selectors.get(raw)
            if hit is None:
                hit = (raw.strip() or "none") if raw is not None else "none"
                if len(selectors) < 100_000:
                    selectors[raw] = hit
                note(hit)
            return hit

        results: dict[tuple[Any, ...], tuple[Any, ...]] = {}

        def shared(entries: tuple[Any, ...]) -> tuple[Any, ...]:
            # Most records repeat one of a few DKIM/SPF result sets; keeping
            # one copy of each keeps a 20,000-row chunk a few MB.
            hit = results.get(entries)
            if hit is None:
                if len(results) < 50_000:
                    results[entries] = entries
                return entries
            return hit

        def reason(elem: Any) -> tuple[str | None, str | None]:
            if not len(elem):
                raise declined("a <reason> without child elements (parsedmarc drops the record)")
            rtype = comment = missing
            for child in elem:
                tag = child.tag
                if tag == t_type:
                    if rtype is not missing or len(child):
                        raise declined("repeated or nested <type> in a reason")
                    rtype = child.text
                elif tag == t_comment:
                    if comment is not missing or len(child):
                        raise declined("repeated or nested <comment> in a reason")
                    comment = child.text
            comment = comment.strip() or None if isinstance(comment, str) else None
            note(comment)
            return (lowered(rtype) if rtype is not missing else None, comment)

        def handle(rec: Any) -> None:
            row = ids = idents = auth = None
            for child in rec:
                tag = child.tag
                if tag == t_row:
                    if row is not None:
                        raise declined("two <row> in a record")
                    row = child
                elif tag == t_ids:
                    if ids is not None:
                        raise declined("two <identifiers> in a record")
                    ids = child
                elif tag == t_auth:
                    if auth is not None:
                        raise declined("two <auth_results> in a record")
                    auth = child
                elif tag == t_idents:
                    if idents is not None:
                        raise declined("two <identities> in a record")
                    idents = child
            if row is None:
                raise declined("no <row>")

            ip = count = pe = missing
            for child in row:
                tag = child.tag
                if tag == t_ip:
                    if ip is not missing or len(child):
                        raise declined("repeated or nested <source_ip>")
                    ip = child.text
                elif tag == t_count:
                    if count is not missing or len(child):
                        raise declined("repeated or nested <count>")
                    count = child.text
                elif tag == t_pe:
                    if pe is not missing:
                        raise declined("two <policy_evaluated>")
                    pe = child
            if ip is missing or count is missing or pe is missing:
                raise declined("row lacks source_ip, count or policy_evaluated")
            if ip is not None:
                ip = ip.strip()
            if not ip:
                raise declined("Source IP address is empty")
            try:
                if ":" in ip:
                    inet_pton(af6, ip)
                    ip = ip.lower()
                else:
                    inet_pton(af4, ip)
            except OSError:
                raise declined(f"source IP {ip[:60]!r} is not plain IPv4/IPv6 text") from None
            if count is None:
                raise declined("empty count")
            try:
                count = int(count)
            except ValueError as e:
                raise declined(str(e)) from None

            disp = pdkim = pspf = missing
            reasons: Any = ()
            for child in pe:
                tag = child.tag
                if tag == t_disp:
                    if disp is not missing or len(child):
                        raise declined("repeated or nested <disposition>")
                    disp = child.text
                elif tag == t_dkim:
                    if pdkim is not missing or len(child):
                        raise declined("repeated or nested <dkim> in policy_evaluated")
                    pdkim = child.text
                elif tag == t_spf:
                    if pspf is not missing or len(child):
                        raise declined("repeated or nested <spf> in policy_evaluated")
                    pspf = child.text
                elif tag == t_reason:
                    reasons = (*reasons, reason(child))
            if pdkim is missing or pspf is missing:
                raise declined("policy_evaluated lacks dkim or spf")
            disposition = (word(disp)[0] if disp is not missing else None) or "none"
            pdkim, dkim_aligned = word(pdkim)
            pspf, spf_aligned = word(pspf)

            id_elem = idents if idents is not None else ids
            if id_elem is None:
                raise declined("no <identifiers>")
            header = env_from = env_to = missing
            for child in id_elem:
                tag = child.tag
                if tag == t_hf:
                    if header is not missing or len(child):
                        raise declined("repeated or nested <header_from>")
                    header = child.text
                elif tag == t_ef:
                    if env_from is not missing or len(child):
                        raise declined("repeated or nested <envelope_from>")
                    env_from = child.text
                elif tag == t_et:
                    if env_to is not missing or len(child):
                        raise declined("repeated or nested <envelope_to>")
                    env_to = child.text
            if header is missing:
                raise declined("identifiers lack header_from")

            if auth is None:
                raise declined("no <auth_results>")
            dkims: list[tuple[str | None, str, str | None]] = []
            spfs: list[tuple[str | None, str | None, str | None]] = []
            last_spf: Any = None
            for child in auth:
                tag = child.tag
                if tag == t_dkim:
                    is_dkim = True
                elif tag == t_spf:
                    is_dkim = False
                else:
                    continue
                if not len(child):
                    # xmltodict makes this None or a string; parsedmarc fails
                    # on None and on a string containing "domain", and skips
                    # any other string.
                    text = child.text.strip() if child.text else ""
                    if not text or "domain" in text:
                        raise declined("an empty or text-only DKIM/SPF result")
                    if not is_dkim:
                        last_spf = None
                    continue
                dom = sel = res = missing
                third = t_sel if is_dkim else t_scope
                for leaf in child:
                    tag = leaf.tag
                    if tag == t_dom:
                        if dom is not missing or len(leaf):
                            raise declined("repeated or nested <domain> in an auth result")
                        dom = leaf.text
                    elif tag == t_res:
                        if res is not missing or len(leaf):
                            raise declined("repeated or nested <result> in an auth result")
                        res = leaf.text
                    elif tag == third:
                        if sel is not missing or len(leaf):
                            raise declined("repeated or nested <selector>/<scope> in an auth result")
                        sel = leaf.text
                if dom is missing:
                    if not is_dkim:
                        last_spf = None
                    continue
                domain = lowered(dom)
                if not is_dkim:
                    last_spf = dom
                if domain is None:
                    continue
                result = word(res)[0] if res is not missing else None
                if is_dkim:
                    dkims.append((domain, selector(sel if sel is not missing else None), result or "none"))
                else:
                    scope = lowered(sel) if sel is not missing else None
                    spfs.append((domain, scope or "mfrom", result or "none"))

            if env_from is missing or env_from is None or not env_from.strip():
                envelope_from = lowered_twice(last_spf)
            else:
                envelope_from = lowered(env_from)
            values = (
                ip, count, disposition, pdkim or "fail", pspf or "fail", dkim_aligned, spf_aligned,
                dkim_aligned or spf_aligned, lowered_twice(header),
                envelope_from, lowered(env_to) if env_to is not missing else None,
                reasons, shared(tuple(dkims)), shared(tuple(spfs)),
            )
            rows = parser.rows
            if split:
                parts = split_cache.get(count)
                if parts is None:
                    parts = split_cache[count] = [
                        ((lo.date() - EPOCH).days, micros(lo), micros(hi), n)
                        for lo, hi, n in day_split(begin, end, count)
                    ]
                for d, b_us, e_us, n in parts:
                    rows.append((d, b_us, e_us, ip, n, *values[2:]))
            else:
                rows.append((day0, begin0, end0, *values))
            if len(rows) >= limit:
                flush()

        return handle

    def _flush(self) -> None:
        """Turn the rows gathered so far into an Arrow batch (and free them)."""
        rows = self.rows
        if not rows:
            return
        self._account(rows)
        self.batches.append(RowChunk(rows).to_arrow())
        self.rows = []

    def _account(self, rows: list[tuple[Any, ...]]) -> None:
        self.n_rows += len(rows)
        counts = [r[4] for r in rows]
        self.messages += sum(counts)
        lo_count, hi_count = min(counts), max(counts)
        self.min_count = lo_count if self.min_count is None else min(lo_count, self.min_count)
        self.max_count = hi_count if self.max_count is None else max(hi_count, self.max_count)
        lo = min(r[1] for r in rows)
        hi = max(r[2] for r in rows)
        self.min_begin = lo if self.min_begin is None else min(lo, self.min_begin)
        self.max_end = hi if self.max_end is None else max(hi, self.max_end)

    # ---- result

    def part(self, *, keep_tail: bool) -> Part:
        """The parse state as a ``Part``; the unconverted rows stay Python
        tuples only if ``keep_tail`` (the last part), else become Arrow."""
        if self.rows:
            self._account(self.rows)
            if not keep_tail:
                self.batches.append(RowChunk(self.rows).to_arrow())
                self.rows = []
        return Part(
            meta=self.meta, policy=self.policy, version="draft" if self.version is _MISSING else self.version,
            begin=self.begin, end=self.end,
            batches=self.batches, tail=self.rows, rows=self.n_rows, messages=self.messages,
            min_begin=self.min_begin, max_end=self.max_end, min_count=self.min_count, max_count=self.max_count,
            texts=self.texts if self.texts_complete else None, records=self.records_seen,
        )


def _opt_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
