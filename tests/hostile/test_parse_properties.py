"""Property tests for the parser entry points: whatever the bytes, ``parse_payload``
raises nothing but ReportParseError, ``ingest.parsed.parse_raw`` raises nothing at
all, and every report that does come out satisfies the stored-data invariants
(counts in range, no control characters, a sane interval).

Inputs are a real report mutated the way broken and hostile files differ from
it (cut, spliced with attack tokens, bytes flipped, recompressed), plus plain
random bytes. Crashes found here become cases in tests/hostile/cases.py.
"""

from __future__ import annotations

import gzip
import io
import zipfile

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dmarclens.core.errors import ReportParseError
from dmarclens.core.models import RawItem
from dmarclens.ingest.parsed import parse_raw
from dmarclens.parse.guards import MAX_COUNT, MAX_SPAN_SECONDS
from dmarclens.parse.report import parse_payload
from tests.hostile.cases import spec, xml
from tests.hostile.helpers import unsafe_chars

SEED_DOCS = [
    xml("prop-a"),
    xml("prop-b", span=3 * 86400),  # a multi-day report: the day split path
]
TOKENS = [
    b"<!DOCTYPE feedback [<!ENTITY a 'b'>]>", b"&a;", b"&#0;", b"&#x1b;", b"<![CDATA[", b"]]>", b"<record>",
    b"</record>", b"<count>-1</count>", b"<count>99999999999999999999</count>", b"<source_ip>::1%x</source_ip>",
    b"<begin>0</begin>", b"<end>9999999999</end>", b"\x00", b"\x1b[31m", "\u202e".encode(), b"\xff\xfe",
    b"<?xml version='1.0' encoding='utf-16'?>", b"</feedback>", b"<feedback>", b"xmlns:x='urn:x'", b"<x:a/>",
    b"<reason/>", b"<org_name></org_name>", b"<report_id></report_id>", b"<domain></domain>", b"\r\n",
]

edit = st.tuples(
    st.sampled_from(["insert", "delete", "replace", "flip"]),
    st.floats(min_value=0, max_value=1),
    st.one_of(st.sampled_from(TOKENS), st.binary(max_size=40)),
)


def mutate(doc: bytes, edits: list[tuple[str, float, bytes]]) -> bytes:
    for op, where, payload in edits:
        i = int(where * len(doc))
        if op == "insert":
            doc = doc[:i] + payload + doc[i:]
        elif op == "delete":
            doc = doc[:i] + doc[i + 1 + len(payload):]
        elif op == "replace":
            doc = doc[:i] + payload + doc[i + len(payload):]
        elif doc:
            i = min(i, len(doc) - 1)
            doc = doc[:i] + bytes([doc[i] ^ (payload[0] if payload else 0x20)]) + doc[i + 1:]
    return doc


def wrap(doc: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(doc, mtime=0)
    if how == "gzip-cut":
        data = gzip.compress(doc, mtime=0)
        return data[: max(10, len(data) // 2)]
    if how == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("r.xml", doc)
        return buf.getvalue()
    return doc


payloads = st.one_of(
    st.builds(
        lambda base, edits, how: wrap(mutate(base, edits), how),
        st.sampled_from(SEED_DOCS),
        st.lists(edit, min_size=1, max_size=6),
        st.sampled_from(["plain", "plain", "gzip", "gzip-cut", "zip"]),
    ),
    st.binary(max_size=2048),
)


def check_invariants(data: bytes) -> None:
    try:
        item = parse_payload(data)
    except ReportParseError as e:
        assert str(e), "a rejection always says why"
        return
    report = item.report
    if report is None:
        return
    assert report.begin <= report.end
    assert (report.end - report.begin).total_seconds() <= MAX_SPAN_SECONDS
    assert all(0 <= c <= MAX_COUNT for c in report.records.count)
    for value in (report.org_name, report.report_id, report.policy.domain, report.org_email or "",
                  *[v or "" for v in report.records.header_from], *report.records.source_ip):
        assert not unsafe_chars(value), repr(value)
    assert "%" not in "".join(report.records.source_ip)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(payloads)
@example(b"<feedback>" + b"<a>" * 200 + b"</feedback>")
@example(gzip.compress(b"\x00" * 100))
@example(wrap(xml("e", records=None).replace(b"<count>120</count>", b"<count>1e3</count>"), "zip"))
def test_parse_payload_raises_only_report_parse_error(data: bytes) -> None:
    check_invariants(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(payloads, st.sampled_from([None, "receiver.example", "<script>", "a" * 300]))
def test_parse_raw_never_raises_and_always_accounts_for_the_item(data: bytes, sender: str | None) -> None:
    parsed = parse_raw(RawItem(data=data, origin="prop.xml", mail_from_domain=sender))
    assert (parsed.item is None) != (parsed.error is None), "exactly one of a result or a reason"
    assert parsed.raw.data == b"" and parsed.size_bytes == (len(data) or None)


def test_the_seed_documents_themselves_parse() -> None:
    for doc in SEED_DOCS:
        assert parse_payload(doc).report is not None
    assert spec("x").messages == 127
