"""The streaming parser gives exactly parsedmarc's normalized output.

Both parsers run on the same XML: every report in sample_reports/, reports
generated in the three dialects (single-day, multi-day, odd spans), each
real-world quirk, and targeted edge cases (namespaces, comments, attributes,
odd IPs and counts, missing or repeated elements, org_name and report_id
clean-ups). Where the fast path accepts an input, every report field and
every record column must equal parsedmarc's (IPs, counts, dispositions,
alignment, auth results, identifiers, day split, policy, metadata); where it
declines, parsedmarc decides, which is what ingest does.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from typing import Any

import pytest

from dmarclens.core.errors import ReportParseError
from dmarclens.core.models import Report
from dmarclens.core.payload import decompress
from dmarclens.core.records import ColumnarRecords
from dmarclens.generator import FORMATS, Quirks, build_world, render_report
from dmarclens.parse import fast as fast_path
from dmarclens.parse.formats import prepare_aggregate_xml, sniff
from dmarclens.parse.reference import parse_aggregate_xml
from dmarclens.parse.report import parse_aggregate, to_utf8
from dmarclens.parse.stream import FastPathDeclined
from dmarclens.sources.files import iter_paths
from tests.conftest import SAMPLES
from tests.perf.data import DAY0, render, report_spec

REPORT_FIELDS = (
    "org_name", "org_email", "org_extra_contact", "report_id", "begin", "end", "policy", "format",
    "xml_schema", "xml_namespace", "generator", "errors", "warnings", "key",
)


def view(report: Report) -> dict[str, Any]:
    """Everything ingest stores about a report, as plain comparable values."""
    out: dict[str, Any] = {name: getattr(report, name) for name in REPORT_FIELDS}
    out["rows"] = len(report.records)
    out["messages"] = report.records.messages
    for name, values in report.records.columns().items():
        if name in ("interval_begin", "interval_end"):
            assert all(v.utcoffset() is not None and not v.utcoffset() for v in values), name
        out[name] = values
    return out


def compare(xml: bytes, *, fallback_org: str | None = None, chunk_rows: int = 7) -> str:
    """Run both parsers; assert equal output when the fast path answers.

    Returns "fast" or "declined: <why>". A small ``chunk_rows`` makes even
    short reports cross Arrow chunk boundaries.
    """
    try:
        reference: Report | ReportParseError = parse_aggregate_xml(xml, fallback_org=fallback_org)
    except ReportParseError as e:
        reference = e
    prepared = prepare_aggregate_xml(xml, fallback_org=fallback_org)
    try:
        fast = fast_path.parse_aggregate_fast(prepared, chunk_rows=chunk_rows)
    except FastPathDeclined as e:
        return f"declined: {e}"
    assert not isinstance(reference, Exception), f"parsedmarc rejects what the fast path accepted: {reference}"
    assert fast.parser == "fast" and reference.parser == "parsedmarc"
    assert isinstance(fast.records, ColumnarRecords)
    got, want = view(fast), view(reference)
    for name in want:
        assert got[name] == want[name], f"{name} differs"
    return "fast"


# --------------------------------------------------------------------------- samples


def test_every_sample_report_parses_identically() -> None:
    outcomes: collections.Counter[str] = collections.Counter()
    declined: list[str] = []
    for raw in iter_paths([SAMPLES]):
        if raw.problem or raw.kind_hint or not raw.data:
            continue
        payload = to_utf8(decompress(raw.data))
        if sniff(payload) != "xml":
            continue
        result = compare(payload, fallback_org=raw.mail_from_domain)
        outcomes[result.split(":")[0]] += 1
        if result != "fast":
            declined.append(f"{raw.origin} {raw.member or ''}: {result}")
    assert outcomes["fast"] >= 900, outcomes
    # Only the deliberately broken quirk files (xs:schema wrapper, a cp1252
    # byte) go to parsedmarc; anything more means the fast path regressed.
    assert len(declined) <= 2, declined


# --------------------------------------------------------------------------- generated


@pytest.fixture(scope="module")
def world_reports() -> list[Any]:
    world = build_world(seed=11, days=21)
    by_reporter: dict[str, list[Any]] = collections.defaultdict(list)
    for spec in world.reports:
        by_reporter[spec.reporter].append(spec)
    return [spec for specs in by_reporter.values() for spec in specs[:4]]


@pytest.mark.parametrize("fmt", FORMATS)
def test_world_reports_in_every_dialect(world_reports: list[Any], fmt: str) -> None:
    results = [compare(render_report(spec, fmt)) for spec in world_reports]
    assert results.count("fast") >= len(results) - 1, results


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("begin", "span"),
    [
        (DAY0, 86399),  # Google: one day, inclusive end
        (DAY0, 86400),  # Microsoft: exactly 24 h, not split
        (DAY0 + 3600, 86400 + 3600),  # 25 h: split with largest-remainder rounding
        (DAY0, 3 * 86400),  # 72 h after an outage
        (DAY0 + 12345, 3 * 86400 + 999),  # odd start, odd length
        (DAY0, 14 * 86400 - 1),  # two weeks
        (DAY0, 0),  # begin == end
        (DAY0 + 500, -400),  # end before begin: parsedmarc keeps it, the store rejects it later
    ],
)
def test_spans_and_day_split(fmt: str, begin: int, span: int) -> None:
    spec = report_spec(40, fmt=fmt, begin=begin, span=span)  # type: ignore[arg-type]
    assert compare(render(spec)) == "fast"


def test_day_split_rounding_for_every_small_count() -> None:
    spec = report_spec(60, begin=DAY0 + 7 * 3600, span=2 * 86400 + 5 * 3600)
    for i, rec in enumerate(spec.records):
        spec.records[i] = type(rec)(**{**rec.__dict__, "count": i % 12})
    assert compare(render(spec), chunk_rows=5) == "fast"


def test_a_big_report_across_many_chunks() -> None:
    spec = report_spec(3000, span=2 * 86400 + 77)
    assert compare(render(spec), chunk_rows=1000) == "fast"


@pytest.mark.parametrize("quirk", [name for name in Quirks.__dataclass_fields__])
def test_each_real_world_quirk(quirk: str) -> None:
    spec = report_spec(8, fmt="rfc9990" if quirk == "no_namespace" else "rfc7489")
    spec.records[0] = type(spec.records[0])(**{**spec.records[0].__dict__, "reasons": ()})
    xml = render_report(spec, quirks=Quirks(**{quirk: True}))
    result = compare(xml, fallback_org="google.com")
    if quirk in ("xs_schema_wrapper", "cp1252_byte"):
        assert result.startswith("declined"), result  # parsedmarc's recovery decides
    else:
        assert result == "fast", result


# --------------------------------------------------------------------------- edge cases

BASE = render(report_spec(6)).decode()


def _sub(pattern: str, repl: str, count: int = 1) -> Callable[[str], str]:
    def edit(text: str) -> str:
        new = re.sub(pattern, repl, text, count=count, flags=re.S)
        assert new != text, f"edit {pattern!r} changed nothing"
        return new
    return edit


def _first_record(edit: Callable[[str], str]) -> Callable[[str], str]:
    """Apply ``edit`` to the first <record> only."""
    def apply(text: str) -> str:
        start = text.index("<record>")
        end = text.index("</record>", start) + len("</record>")
        return text[:start] + edit(text[start:end]) + text[end:]
    return apply


def _single_record(text: str) -> str:
    first = text.index("<record>")
    last = text.rindex("</record>") + len("</record>")
    one_end = text.index("</record>", first) + len("</record>")
    return text[:first] + text[first:one_end] + text[last:]


EDGES: dict[str, Callable[[str], str]] = {
    "default namespace": _sub(r"<feedback>", '<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">'),
    "other default namespace": _sub(r"<feedback>", '<feedback xmlns="http://dmarc.org/dmarc-xml/0.1">'),
    "xs and xsi prefixes on the root": _sub(
        r"<feedback>", '<feedback xmlns:xs="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'),
    "prefixed root": lambda t: t.replace("<feedback>", '<d:feedback xmlns:d="urn:x">').replace(
        "</feedback>", "</d:feedback>"),
    "namespace redeclared below the root": _sub(r"<record>", '<record xmlns="urn:y">'),
    "prefixed foreign element in a record": lambda t: _sub(
        r"<feedback>", '<feedback xmlns:x="urn:x">')(_first_record(_sub(r"<row>", "<x:note>hi</x:note><row>"))(t)),
    "comment in the prolog": _sub(r"<feedback>", "<!-- made by a test -->\n<feedback>"),
    "comment inside a value": _sub(r"<header_from>example.com", "<header_from>exam<!-- x -->ple.com"),
    "comment between records": _sub(r"</record>", "</record><!-- next -->"),
    "processing instruction in a record": _sub(r"<row>", "<?note here?><row>"),
    "attribute on a leaf": _sub(r"<org_name>", '<org_name lang="en">'),
    "lang attribute on a comment": _sub(r"<comment>", '<comment lang="en">'),
    "attribute on a record": _sub(r"<record>", '<record id="1">'),
    "text with an equals-quote": _sub(r"<comment>arc=pass", '<comment>arc="pass"'),
    "CDATA in a value": _sub(r"<header_from>example.com</header_from>",
                             "<header_from><![CDATA[example.com]]></header_from>"),
    "entity and character references": _sub(r"<comment>arc=pass", "<comment>a&amp;b &#x41;&#66;"),
    "no XML declaration": lambda t: t.split("\n", 1)[1],
    "UTF-8 BOM": lambda t: "\ufeff" + t,
    "declared ISO-8859-1, ASCII content": _sub(r'encoding="UTF-8"', 'encoding="ISO-8859-1"'),
    "XML 1.1 declaration": _sub(r'version="1.0"', 'version="1.1"'),
    "DOCTYPE": _sub(r"<feedback>", '<!DOCTYPE feedback [<!ENTITY e "x">]>\n<feedback>'),
    "uppercase IPv6": lambda t: t.replace("2a01:111:f400:7e1a::", "2A01:111:F400:7E1A::"),
    "IPv4 with a leading zero": _first_record(_sub(r"<source_ip>[^<]+", "<source_ip>040.107.22.9")),
    "IPv6 with a zone id": _first_record(_sub(r"<source_ip>[^<]+", "<source_ip>fe80::1%eth0")),
    "not an IP": _first_record(_sub(r"<source_ip>[^<]+", "<source_ip>mail.example.com")),
    "empty source_ip": _first_record(_sub(r"<source_ip>[^<]+</source_ip>", "<source_ip/>")),
    "spaces around values": lambda t: t.replace("<source_ip>", "<source_ip>  ").replace(
        "<header_from>", "<header_from>\n ").replace("</count>", " </count>"),
    "count 0": _first_record(_sub(r"<count>\d+", "<count>0")),
    "count +7": _first_record(_sub(r"<count>\d+", "<count>+7")),
    "count 1_000": _first_record(_sub(r"<count>\d+", "<count>1_000")),
    "negative count": _first_record(_sub(r"<count>\d+", "<count>-5")),
    "huge count": _first_record(_sub(r"<count>\d+", "<count>99999999999999999999")),
    "non-numeric count": _first_record(_sub(r"<count>\d+", "<count>many")),
    "non-numeric count, single record": lambda t: _single_record(_sub(r"<count>\d+", "<count>many")(t)),
    "capitalised result words": lambda t: t.replace(">pass<", ">Pass<").replace(">none<", ">None<"),
    "missing disposition": _first_record(_sub(r"<disposition>[^<]*</disposition>", "")),
    "empty disposition": _first_record(_sub(r"<disposition>[^<]*</disposition>", "<disposition/>")),
    "missing policy_evaluated spf": _first_record(_sub(r"(<policy_evaluated>.*?)<spf>[^<]*</spf>", r"\1")),
    "empty policy_evaluated dkim": _first_record(_sub(r"(<policy_evaluated>.*?)<dkim>[^<]*</dkim>", r"\1<dkim/>")),
    "missing header_from": _first_record(_sub(r"<header_from>[^<]*</header_from>", "")),
    "empty header_from": _first_record(_sub(r"<header_from>[^<]*</header_from>", "<header_from></header_from>")),
    "uppercase header_from": lambda t: t.replace("<header_from>example.com", "<header_from>Example.COM"),
    "missing identifiers": _first_record(_sub(r"<identifiers>.*?</identifiers>", "")),
    "identities (draft)": lambda t: t.replace("identifiers>", "identities>"),
    "missing auth_results": _first_record(_sub(r"<auth_results>.*?</auth_results>", "")),
    "empty auth_results": _first_record(_sub(r"<auth_results>.*?</auth_results>", "<auth_results/>")),
    "empty DKIM result element": _first_record(_sub(r"<auth_results>", "<auth_results><dkim/>")),
    "text-only SPF result": _first_record(_sub(r"<auth_results>", "<auth_results><spf>softfail</spf>")),
    "missing DKIM selector": lambda t: re.sub(r"<selector>[^<]*</selector>", "", t),
    "missing SPF scope": lambda t: re.sub(r"<scope>[^<]*</scope>", "", t),
    "empty auth result": lambda t: t.replace("<result>pass</result>", "<result/>", 2),
    "auth result without domain": _sub(r"(<spf>\s*)<domain>[^<]*</domain>", r"\1"),
    "envelope_from backfilled from the last SPF": lambda t: re.sub(
        r"<envelope_from>[^<]*</envelope_from>", "", t).replace(
        "</auth_results>", "<spf><domain>Bounce.Example.NET</domain><result>pass</result></spf></auth_results>", 1),
    "empty envelope_from": lambda t: re.sub(r"<envelope_from>[^<]*</envelope_from>", "<envelope_from> </envelope_from>",
                                            t, count=1),
    "empty reason": _first_record(_sub(r"</policy_evaluated>", "<reason></reason></policy_evaluated>")),
    "self-closing reason": _first_record(_sub(r"</policy_evaluated>", "<reason/></policy_evaluated>")),
    "whitespace reason": _first_record(_sub(r"</policy_evaluated>", "<reason> </reason></policy_evaluated>")),
    "text-only reason": _first_record(_sub(r"</policy_evaluated>", "<reason>forwarded</reason></policy_evaluated>")),
    "reason without comment": _first_record(_sub(
        r"</policy_evaluated>", "<reason><type>Forwarded</type></reason></policy_evaluated>")),
    "repeated source_ip": _first_record(_sub(r"(<source_ip>[^<]*</source_ip>)", r"\1\1")),
    "repeated row": _first_record(_sub(r"(<row>.*?</row>)", r"\1\1")),
    "repeated policy_published": _sub(r"(<policy_published>.*?</policy_published>)", r"\1\1"),
    "element inside a leaf": _first_record(_sub(r"<source_ip>", "<source_ip><b/>")),
    "unknown elements everywhere": lambda t: t.replace("<row>", "<row><extra>1</extra>").replace(
        "<report_metadata>", "<report_metadata><vendor>x</vendor>").replace("</record>", "<x>y</x></record>").replace(
        "<policy_published>", "<note/><policy_published>"),
    "records before metadata": lambda t: re.sub(
        r"(<report_metadata>.*?</report_metadata>)(.*?)(</feedback>)", r"\2\1\3", t, flags=re.S),
    "policy after the records": lambda t: re.sub(
        r"(<policy_published>.*?</policy_published>)(.*?)(</feedback>)", r"\2\1\3", t, flags=re.S),
    "no records": lambda t: re.sub(r"<record>.*</record>", "", t, flags=re.S),
    "empty org_name, email fallback": _sub(r"<org_name>[^<]*</org_name>", "<org_name/>"),
    "org_name with spaces": _sub(r"<org_name>[^<]*", "<org_name>Enterprise Outlook"),
    "org_name subdomain": _sub(r"<org_name>[^<]*", "<org_name>Mail.Google.COM"),
    "org_name without a dot": _sub(r"<org_name>[^<]*", "<org_name>Yahoo"),
    "org_name IDN": _sub(r"<org_name>[^<]*", "<org_name>bücher.example.de"),
    "missing email": _sub(r"<email>[^<]*</email>", ""),
    "report_id in angle brackets": _sub(r"<report_id>[^<]*", "<report_id>&lt;r-1.77@google.com&gt;"),
    "empty report_id": _sub(r"<report_id>[^<]*</report_id>", "<report_id/>"),
    "fractional begin": _sub(r"<begin>(\d+)", r"<begin>\1.25"),
    "non-numeric end": _sub(r"<end>\d+", "<end>tomorrow"),
    "missing adkim and aspf": lambda t: re.sub(r"<a(dkim|spf)>[^<]*</a(dkim|spf)>", "", t),
    "missing sp": _sub(r"<sp>[^<]*</sp>", ""),
    "missing p": _sub(r"<p>[^<]*</p>", ""),
    "non-numeric pct": _sub(r"<pct>\d+", "<pct>all"),
    "RFC 9990 fields in a legacy report": _sub(r"</policy_published>", "<np>Reject</np><testing>N</testing>"
                                                 "<discovery_method>treewalk</discovery_method></policy_published>"),
    "version 2.0": _sub(r"<feedback>", "<feedback><version>2.0</version>"),
    "empty version": _sub(r"<feedback>", "<feedback><version/>"),
    "errors": _sub(r"</date_range>", "</date_range><error>first</error><error/><error> second </error>"),
    "zero-width space in a domain": lambda t: t.replace("<header_from>example.com", "<header_from>exa\u200bmple.com"),
    "invalid UTF-8 byte": lambda t: t.replace("arc=pass", "arc=\udc93pass"),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_edge_case(name: str) -> None:
    text = EDGES[name](BASE)
    xml = text.encode("utf-8", "surrogateescape")
    result = compare(xml)
    must_stay_fast = {
        "default namespace", "other default namespace", "xs and xsi prefixes on the root",
        "prefixed foreign element in a record", "comment in the prolog", "entity and character references",
        "no XML declaration", "UTF-8 BOM", "declared ISO-8859-1, ASCII content", "uppercase IPv6",
        "spaces around values", "count 0", "count +7", "count 1_000", "capitalised result words",
        "missing disposition", "empty disposition", "empty policy_evaluated dkim", "empty header_from",
        "uppercase header_from", "identities (draft)", "empty auth_results", "text-only SPF result",
        "missing DKIM selector", "missing SPF scope", "empty auth result", "auth result without domain",
        "envelope_from backfilled from the last SPF", "empty envelope_from", "empty reason", "self-closing reason",
        "reason without comment", "unknown elements everywhere", "policy after the records",
        "empty org_name, email fallback", "org_name with spaces", "org_name subdomain", "org_name without a dot",
        "org_name IDN", "report_id in angle brackets", "fractional begin", "missing adkim and aspf", "missing sp",
        "non-numeric pct", "RFC 9990 fields in a legacy report", "version 2.0", "empty version", "errors",
        "zero-width space in a domain", "huge count",
    }
    if name in must_stay_fast:
        assert result == "fast", result


def test_the_fast_path_flags_records_that_need_repair() -> None:
    """Counts and strings the store must vet are noted while parsing."""
    clean = fast_path.parse_aggregate_fast(render(report_spec(20)))
    assert clean.records.needs_repair(max_count=1_000_000, unsafe=re.compile("[\u200b]")) is False
    odd = fast_path.parse_aggregate_fast(EDGES["zero-width space in a domain"](BASE).encode())
    assert odd.records.needs_repair(max_count=1_000_000, unsafe=re.compile("[\u200b]")) is True
    big = fast_path.parse_aggregate_fast(EDGES["huge count"](BASE).encode())
    assert big.records.needs_repair(max_count=1_000_000, unsafe=re.compile("[\u200b]")) is True


def test_ingest_falls_back_to_parsedmarc_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    xml = EDGES["comment inside a value"](BASE).encode()
    with caplog.at_level("INFO", logger="dmarclens.parse.report"):
        report = parse_aggregate(xml)
    assert report.parser == "parsedmarc"
    assert "fast parser declined" in caplog.text
    assert parse_aggregate(BASE.encode()).parser == "fast"


@pytest.mark.parametrize(
    ("edit", "expect_parts"),
    [
        (None, 3),
        (EDGES["policy after the records"], 1),  # a part without policy: parsed in one piece
        (EDGES["default namespace"], 3),
        (EDGES["identities (draft)"], 3),
    ],
)
def test_a_report_split_across_processes(monkeypatch: pytest.MonkeyPatch, edit: Any, expect_parts: int) -> None:
    """A big report is cut into parts parsed by forked processes; the result
    is the same as one piece, and a report that cannot be cut still parses."""
    monkeypatch.setattr(fast_path, "SPLIT_MIN_BYTES", 0)
    fast_path.set_split_processes(3)
    parts: list[int] = []
    real = fast_path._assemble

    def counting(ps: list[Any], *a: Any) -> Any:
        report = real(ps, *a)
        parts.append(len(ps))
        return report

    monkeypatch.setattr(fast_path, "_assemble", counting)
    try:
        text = render(report_spec(1500, span=3 * 86400 + 4000)).decode()
        xml = (edit(text) if edit else text).encode()
        assert compare(xml, chunk_rows=400) == "fast"
    finally:
        fast_path.set_split_processes(None)
    assert parts == [expect_parts]
