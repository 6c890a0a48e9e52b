"""The report generator: dialects, quirks, wrappers, the simulated world and
its stories, the committed sample set, and the benchmark inputs.

The generator is the source of truth for every other test area, so these
tests check it against independent readers (lxml, the stdlib ``email`` and
``mailbox`` modules, parsedmarc, the IPinfo database parsedmarc ships) rather
than against itself.
"""

from __future__ import annotations

import email
import gzip
import hashlib
import io
import ipaddress
import logging
import mailbox
import re
import statistics
import zipfile
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import maxminddb
import parsedmarc
import pytest
from lxml import etree

from dmarclens.generator import (
    RFC9990_NAMESPACE,
    DkimAuth,
    MailMeta,
    OverrideReason,
    PolicySpec,
    Quirks,
    RecordSpec,
    ReportSpec,
    SpfAuth,
    World,
    attachment_for,
    big_report_xml,
    build_world,
    forward_email,
    gzip_bytes,
    inline_report_email,
    many_small_reports,
    mbox_bytes,
    placements,
    render_report,
    report_email,
    report_file,
    report_filename,
    whole_body_gzip_email,
    write_samples,
    zip_bytes,
)

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "sample_reports"
MMDB = Path(parsedmarc.__file__).parent / "resources" / "ipinfo" / "ipinfo_lite.mmdb"
WHEN = datetime(2026, 10, 6, 8, 0, tzinfo=UTC)
DAY = int(datetime(2026, 10, 5, tzinfo=UTC).timestamp())

logging.getLogger("parsedmarc").setLevel(logging.ERROR)


def _spec(fmt: str = "rfc7489", **kw: object) -> ReportSpec:
    records = [
        RecordSpec(
            source_ip="40.107.22.10",
            count=120,
            header_from="example.com",
            envelope_from="example.com",
            envelope_to="contoso.example",
            dkim=(DkimAuth("example.com", "selector1"),),
            spf=(SpfAuth("example.com"),),
        ),
        RecordSpec(
            source_ip="2a01:111:f400:7e1a::20b",
            count=3,
            header_from="example.com",
            disposition="reject",
            dkim_eval="fail",
            spf_eval="fail",
            envelope_from="lists.university.example",
            dkim=(DkimAuth("example.com", None, "fail"),),
            spf=(SpfAuth("lists.university.example", "pass"),),
            reasons=(OverrideReason("local_policy", "arc=pass"),),
        ),
    ]
    policy = PolicySpec("example.com", p="reject", sp="reject", fo="1", np="reject", testing="n",
                        discovery_method="psl")
    base: dict[str, object] = dict(
        org_name="google.com", email="noreply-dmarc-support@google.com", report_id="r-1", begin=DAY,
        end=DAY + 86399, policy=policy, records=records, receiver="google.com", fmt=fmt,
        generator="acme-dmarc 2.1",
    )
    base.update(kw)
    return ReportSpec(**base)  # type: ignore[arg-type]


def _tree(data: bytes) -> etree._Element:
    return etree.fromstring(data)


def _local(el: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in el]


def _parse(data: bytes) -> dict:
    return parsedmarc.parse_report_file(data, offline=True)


# --------------------------------------------------------------------------- dialects


def test_rfc7489_dialect_has_pct_fo_and_identifier_order_but_no_rfc9990_fields() -> None:
    root = _tree(render_report(_spec("rfc7489", version="1.0")))
    assert root.tag == "feedback" and root.nsmap == {}
    assert root.findtext("version") == "1.0"
    pol = root.find("policy_published")
    assert _local(pol) == ["domain", "adkim", "aspf", "p", "sp", "pct", "fo"]
    assert pol.findtext("pct") == "100"
    assert pol.find("np") is None and pol.find("discovery_method") is None
    assert root.find("report_metadata/generator") is None
    ident = root.find("record/identifiers")
    assert _local(ident) == ["envelope_to", "envelope_from", "header_from"]
    # a DKIM result without a selector stays without one in RFC 7489
    second = root.findall("record")[1]
    assert second.find("auth_results/dkim/selector") is None
    assert second.findtext("row/policy_evaluated/reason/type") == "local_policy"


def test_rfc9990_dialect_carries_namespace_np_testing_discovery_generator_and_selectors() -> None:
    root = _tree(render_report(_spec("rfc9990")))
    ns = {"d": RFC9990_NAMESPACE}
    assert etree.QName(root).namespace == RFC9990_NAMESPACE
    assert root.findtext("d:version", namespaces=ns) == "1.0"
    pol = root.find("d:policy_published", ns)
    assert pol.findtext("d:np", namespaces=ns) == "reject"
    assert pol.findtext("d:testing", namespaces=ns) == "n"
    assert pol.findtext("d:discovery_method", namespaces=ns) == "psl"
    assert pol.find("d:pct", ns) is None
    assert root.findtext("d:report_metadata/d:generator", namespaces=ns) == "acme-dmarc 2.1"
    selectors = root.findall("d:record/d:auth_results/d:dkim/d:selector", ns)
    assert len(selectors) == len(root.findall("d:record/d:auth_results/d:dkim", ns)) == 2
    assert _local(root.find("d:record/d:identifiers", ns)) == ["header_from", "envelope_from", "envelope_to"]
    parsed = _parse(render_report(_spec("rfc9990")))["report"]
    assert parsed["xml_namespace"] == RFC9990_NAMESPACE
    assert parsed["policy_published"]["np"] == "reject"
    assert parsed["report_metadata"]["generator"] == "acme-dmarc 2.1"


def test_draft_dialect_matches_the_wiki_schema() -> None:
    root = _tree(render_report(_spec("draft")))
    assert root.find("version") is None
    assert _local(root.find("record/identifiers")) == ["header_from"]
    dkim = root.find("record/auth_results/dkim")
    assert _local(dkim) == ["domain", "result", "human_result"]
    assert _local(root.find("record/auth_results/spf")) == ["domain", "result"]
    assert root.find("policy_published/fo") is None
    assert _parse(render_report(_spec("draft")))["report"]["xml_schema"] == "draft"


def test_values_are_escaped() -> None:
    spec = _spec(org_name="A & B <Mail>")
    assert _tree(render_report(spec)).findtext("report_metadata/org_name") == "A & B <Mail>"


# --------------------------------------------------------------------------- quirks


def test_each_quirk_changes_exactly_what_it_names() -> None:
    plain = render_report(_spec())
    assert plain.startswith(b"<?xml")

    no_decl = render_report(_spec(), quirks=Quirks(no_xml_declaration=True))
    assert no_decl.startswith(b"<feedback")

    caps = render_report(_spec(), quirks=Quirks(capitalized_results=True))
    assert b"<result>Pass</result>" in caps and b"<disposition>None</disposition>" in caps
    assert b"<result>pass</result>" not in caps

    empty_reason = render_report(_spec(), quirks=Quirks(empty_reason=True))
    first = _tree(empty_reason).find("record")
    reasons = first.findall("row/policy_evaluated/reason")
    assert len(reasons) == 1 and len(reasons[0]) == 0 and not (reasons[0].text or "").strip()

    empty_org = render_report(_spec(), quirks=Quirks(empty_org_name=True))
    assert _tree(empty_org).findtext("report_metadata/org_name") in ("", None)
    assert _parse(empty_org)["report"]["report_metadata"]["org_name"] == "google.com"  # from <email>

    cp = render_report(_spec(), quirks=Quirks(cp1252_byte=True))
    assert b"\x93arc=pass\x94" in cp
    with pytest.raises(UnicodeDecodeError):
        cp.decode("utf-8")
    assert "\u201carc=pass\u201d" in cp.decode("cp1252")

    wrapped = render_report(_spec(), quirks=Quirks(xs_schema_wrapper=True))
    assert etree.QName(_tree(wrapped)).localname == "schema"
    assert _tree(wrapped).find("feedback/report_metadata") is not None

    bare = render_report(_spec("rfc9990"), quirks=Quirks(no_namespace=True))
    assert b"xmlns=" not in bare and _tree(bare).findtext("version") == "2.0"

    for data in (no_decl, caps, cp, wrapped, bare):
        assert _parse(data)["report_type"] == "aggregate"


def test_cp1252_quirk_without_a_comment_lands_in_extra_contact_info() -> None:
    spec = _spec(records=[_spec().records[0]], extra_contact_info="DMARC desk")
    data = render_report(spec, quirks=Quirks(cp1252_byte=True))
    assert b"<extra_contact_info>\x93DMARC desk\x94</extra_contact_info>" in data


# --------------------------------------------------------------------------- wrappers


def test_gzip_and_zip_are_reproducible_and_round_trip() -> None:
    xml = render_report(_spec())
    assert gzip_bytes(xml, name="a.xml") == gzip_bytes(xml, name="a.xml")
    assert gzip.decompress(gzip_bytes(xml)) == xml
    assert zip_bytes("inner.xml", xml) == zip_bytes("inner.xml", xml)
    with zipfile.ZipFile(io.BytesIO(zip_bytes("inner.xml", xml))) as zf:
        assert zf.namelist() == ["inner.xml"]
        assert zf.getinfo("inner.xml").date_time == (1980, 1, 1, 0, 0, 0)
        assert zf.read("inner.xml") == xml


def test_report_file_names_follow_rfc7489() -> None:
    spec = _spec()
    assert report_filename(spec, "zip") == f"google.com!example.com!{DAY}!{DAY + 86399}.zip"
    assert report_filename(spec, "xml.gz", unique_id="r-1").endswith(f"!{DAY + 86399}!r-1.xml.gz")
    name, data = report_file(spec, render_report(spec), "zip", member_name="dmarc_report.xml")
    assert name.endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["dmarc_report.xml"]


def _meta(n: int = 1) -> MailMeta:
    return MailMeta("noreply-dmarc-support@google.com", "dmarc-rua@example.com",
                    f"Report Domain: example.com Submitter: google.com Report-ID: <r-{n}>", WHEN, f"<m{n}@google.com>")


@pytest.mark.parametrize(
    ("style", "content_type", "suffix"),
    [
        ("gzip", "application/gzip", ".xml.gz"),
        ("zip", "application/zip", ".zip"),
        ("x-zip", "application/x-zip-compressed", ".zip"),
        ("octet-gz", "application/octet-stream", ".xml.gz"),
        ("xml", "text/xml", ".xml"),
    ],
)
def test_report_mail_attachment_styles_parse(style: str, content_type: str, suffix: str) -> None:
    spec = _spec()
    xml = render_report(spec)
    mail = report_email([attachment_for(spec, xml, style)], _meta(), text="report attached\n")  # type: ignore[arg-type]
    msg = email.message_from_bytes(mail)
    parts = [p for p in msg.walk() if p.get_filename()]
    assert [p.get_content_type() for p in parts] == [content_type]
    assert parts[0].get_filename().endswith(suffix)
    payload = parts[0].get_payload(decode=True)
    if suffix == ".xml.gz":
        payload = gzip.decompress(payload)
    elif suffix == ".zip":
        payload = zipfile.ZipFile(io.BytesIO(payload)).read(zipfile.ZipFile(io.BytesIO(payload)).namelist()[0])
    assert payload == xml
    assert _parse(mail)["report"]["report_metadata"]["report_id"] == "r-1"


def test_inline_whole_body_forwarded_and_multi_report_mail() -> None:
    spec = _spec()
    xml = render_report(spec)
    inline = email.message_from_bytes(inline_report_email(xml, _meta()))
    assert not inline.is_multipart() and inline.get_content_type() == "text/xml"
    assert inline.get_payload(decode=True) == xml

    body = email.message_from_bytes(whole_body_gzip_email(gzip_bytes(xml), "r.xml.gz", _meta()))
    assert not body.is_multipart() and body.get_content_type() == "application/gzip"
    assert gzip.decompress(body.get_payload(decode=True)) == xml

    original = report_email([attachment_for(spec, xml, "zip")], _meta())
    fwd = email.message_from_bytes(forward_email(original, _meta(2)))
    inner = [p for p in fwd.walk() if p.get_content_type() == "message/rfc822"]
    assert len(inner) == 1
    assert inner[0].get_payload(0)["Message-ID"] == "<m1@google.com>"

    other = _spec(report_id="r-2", policy=PolicySpec("example.org"))
    multi = report_email([attachment_for(spec, xml, "gzip"), attachment_for(other, render_report(other), "gzip")],
                         _meta(3))
    names = [p.get_filename() for p in email.message_from_bytes(multi).walk() if p.get_filename()]
    assert len(names) == 2 and "example.org" in names[1]

    for mail in (inline_report_email(xml, _meta()), whole_body_gzip_email(gzip_bytes(xml), "r.xml.gz", _meta()),
                 forward_email(original, _meta(2)), multi):
        assert _parse(mail)["report_type"] == "aggregate"


def test_mbox_keeps_every_message_and_escapes_from_lines(tmp_path: Path) -> None:
    xml = render_report(_spec())
    tricky = report_email([attachment_for(_spec(), xml, "gzip")], _meta(1), text="From here on, a report.\n")
    plain = report_email([attachment_for(_spec(report_id="r-2"), xml, "zip")], _meta(2))
    data = mbox_bytes([(tricky, "a@google.com", WHEN), (plain, "a@google.com", WHEN + timedelta(hours=1))])
    assert data.startswith(b"From a@google.com Tue Oct  6 08:00:00 2026\n")
    assert b"\n>From here on" in data
    path = tmp_path / "x.mbox"
    path.write_bytes(data)
    box = mailbox.mbox(path)
    assert [m["Message-ID"] for m in box] == ["<m1@google.com>", "<m2@google.com>"]
    assert all(_parse(m.as_bytes())["report_type"] == "aggregate" for m in box)


# --------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(7, 60, date(2026, 9, 1))


def _digest(world: World) -> str:
    h = hashlib.sha256()
    for spec in world.reports:
        h.update(render_report(spec))
    return h.hexdigest()


def test_world_is_deterministic_and_seed_dependent(world: World) -> None:
    assert _digest(build_world(7, 60, date(2026, 9, 1))) == _digest(world)
    assert _digest(build_world(8, 60, date(2026, 9, 1))) != _digest(world)


def test_world_spans_the_window_with_a_weekday_rhythm(world: World) -> None:
    assert world.days >= 60 and {d.name for d in world.domains} == {"example.com", "example.org", "shop.example.net"}
    assert len(world.reporters) >= 5
    m365 = world.daily_messages("example.com", "m365")
    weekdays = [n for d, n in m365.items() if d.weekday() < 5]
    weekends = [n for d, n in m365.items() if d.weekday() >= 5]
    assert statistics.median(weekdays) > 2.5 * statistics.median(weekends)
    assert len(set(weekdays)) > len(weekdays) // 2  # noise, not a constant


def test_reporters_keep_their_habits(world: World) -> None:
    by = defaultdict(list)
    for spec in world.reports:
        by[spec.reporter].append(spec)
    for spec in by["google"]:
        assert spec.begin % 86400 == 0 and spec.end - spec.begin == 86399 and spec.fmt == "rfc7489"
    assert any(all(r.envelope_from is None for r in s.records) for s in by["google"])
    for spec in by["microsoft"]:
        assert spec.end - spec.begin == 86400
        assert all(r.envelope_to for r in spec.records)
    assert {s.fmt for s in by["rfc9990"]} == {"rfc9990"} and {s.fmt for s in by["legacy"]} == {"draft"}
    assert {s.end - s.begin for s in by["legacy"]} == {7 * 86400 - 1}
    comcast_spans = sorted({s.end - s.begin for s in by["comcast"]})
    assert comcast_spans == [86399, 3 * 86400 - 1]
    for key in ("yahoo", "comcast"):  # some days are never reported
        days = {s.begin for s in by[key]}
        assert len(days) < world.days


def test_source_addresses_belong_to_the_named_providers(world: World) -> None:
    expected = {(s.domain, s.label): s.as_domain for s in world.sources if s.as_domain}
    expected[("shop.example.net", "story:ses-dkim-regression")] = "amazon.com"
    checked: set[str] = set()
    with maxminddb.open_database(str(MMDB)) as db:
        for spec, rec in world.records():
            want = expected.get((spec.domain, rec.label))
            if want is None or rec.source_ip in checked:
                continue
            checked.add(rec.source_ip)
            info = db.get(rec.source_ip)
            assert info is not None and info.get("as_domain") == want, (rec.label, rec.source_ip, info)
        spoofers = {r.source_ip for _, r in world.records() if "spoof" in r.label}
        assert all(db.get(ip) for ip in spoofers)
    assert len(checked) > 500


def test_records_are_consistent_with_their_auth_results(world: World) -> None:
    def org(domain: str) -> list[str]:
        return domain.lower().split(".")[-2:]

    for spec, rec in world.records():
        aligned_dkim = any(d.result == "pass" and org(d.domain) == org(rec.header_from) for d in rec.dkim)
        aligned_spf = any(s.result == "pass" and org(s.domain) == org(rec.header_from) for s in rec.spf)
        assert (rec.dkim_eval == "pass") == aligned_dkim
        assert (rec.spf_eval == "pass") == aligned_spf
        if not rec.dmarc_pass and not rec.reasons:
            assert rec.disposition == spec.policy.p


# --------------------------------------------------------------------------- stories


def _before(world: World, day: date) -> list[tuple[ReportSpec, RecordSpec]]:
    cutoff = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return [(s, r) for s, r in world.records() if s.end <= cutoff]


def test_the_four_stories_exist(world: World) -> None:
    kinds = {s.key: s.kind for s in world.stories}
    assert kinds == {
        "m365-burst": "passing-abuse",
        "spoof-burst": "spoofing",
        "ses-dkim-regression": "auth-regression",
        "mailchimp-onboarding": "new-sender",
    }
    for story in world.stories:
        assert story.messages == sum(n for _, n in story.daily) > 0
        assert story.ips and story.first_day <= story.last_day
        # no report that starts before the story carries it (a store would smear it backwards)
        first_epoch = int(datetime.combine(story.first_day, datetime.min.time(), UTC).timestamp())
        assert all(s.begin >= first_epoch for s, r in world.records() if r.label == story.label), story.key


def test_seed_case_passes_dmarc_from_a_never_seen_m365_slash24_well_above_baseline(world: World) -> None:
    story = world.story("m365-burst")
    net = ipaddress.ip_network("40.107.247.0/24")
    assert story.networks == ("40.107.247.0/24",)
    assert all(ipaddress.ip_address(ip) in net for ip in story.ips)
    assert story.first_day.weekday() == 5  # begins on a Saturday
    # never seen before the story, for any domain and any reporter
    assert not [r.source_ip for _, r in _before(world, story.first_day) if ipaddress.ip_address(r.source_ip) in net]
    baseline_selectors = {(d.domain, d.selector) for s, r in world.records() if r.label == "m365" for d in r.dkim}
    rows = [(s, r) for s, r in world.records() if r.label == story.label]
    assert rows and all(s.domain == "example.com" for s, _ in rows)
    for _, rec in rows:
        assert rec.dmarc_pass and rec.dkim_eval == "pass" and rec.spf_eval == "pass"
        assert {(d.domain, d.selector) for d in rec.dkim} <= baseline_selectors == {("example.com", "selector1")}
        assert all(d.result == "pass" for d in rec.dkim) and all(s.result == "pass" for s in rec.spf)
    with maxminddb.open_database(str(MMDB)) as db:
        assert {db.get(ip)["as_domain"] for ip in story.ips} == {"microsoft.com"}
    m365 = world.daily_messages("example.com", "m365")
    for day, n in story.daily:
        base = story.baseline_weekend_median if day.weekday() >= 5 else story.baseline_weekday_median
        assert base and n + m365[day] > 2 * base, (day, n, m365[day], base)


def test_spoofing_burst_fails_dmarc_from_new_addresses(world: World) -> None:
    story = world.story("spoof-burst")
    seen_before = {r.source_ip for _, r in _before(world, story.first_day)}
    assert not set(story.ips) & seen_before
    rows = [(s, r) for s, r in world.records() if r.label == story.label]
    assert all(s.domain == "shop.example.net" and not r.dmarc_pass and r.disposition == "quarantine" for s, r in rows)
    assert story.baseline_weekday_median and story.messages > 20 * story.baseline_weekday_median


def test_ses_dkim_regression_breaks_only_inside_its_window(world: World) -> None:
    story = world.story("ses-dkim-regression")
    assert (story.last_day - story.first_day).days == 3
    inside = [r for _, r in world.records() if r.label == story.label]
    assert inside and all(not r.dmarc_pass and r.disposition == "quarantine" for r in inside)
    for rec in inside:
        own = [d for d in rec.dkim if d.domain == "shop.example.net"]
        assert own and all(d.result in ("fail", "permerror") for d in own)
        assert any(d.domain == "amazonses.com" and d.result == "pass" for d in rec.dkim)
    normal = [r for _, r in world.records() if r.label == "ses"]
    assert normal and all(r.dmarc_pass for r in normal)
    ses_nets = {ipaddress.ip_network(n) for n in story.networks}
    assert all(any(ipaddress.ip_address(r.source_ip) in n for n in ses_nets) for r in inside)


def test_mailchimp_onboarding_is_new_passing_and_weekly(world: World) -> None:
    story = world.story("mailchimp-onboarding")
    mailchimp = [ipaddress.ip_network("198.2.128.0/18"), ipaddress.ip_network("205.201.128.0/20")]
    earlier = [r.source_ip for s, r in _before(world, story.first_day) if s.domain == "example.org"
               and any(ipaddress.ip_address(r.source_ip) in n for n in mailchimp)]
    assert earlier == []
    assert all(r.dmarc_pass for _, r in world.records() if r.label == story.label)
    peaks = [d for d, n in story.daily if n > 300]
    assert len(peaks) >= 4 and {d.weekday() for d in peaks} == {1}


def test_duplicate_and_quirk_reports_are_planted(world: World) -> None:
    tags = [t for s in world.reports for t in s.tags if t.startswith("quirk:")]
    assert sorted(tags) == sorted(f"quirk:{name}" for name in Quirks().__dataclass_fields__)
    places = placements(world)
    by_id = defaultdict(list)
    for pl in places:
        by_id[pl.report.report_id].append(pl.path)
    dups = {rid: paths for rid, paths in by_id.items() if len(paths) > 1}
    assert len(dups) == 1
    (paths,) = dups.values()
    assert len(paths) == 3 and any(p.startswith("mail/forwarded/") for p in paths)


# --------------------------------------------------------------------------- the sample set


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    write_samples(out)
    return out


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_samples_is_byte_identical_and_removes_stale_files(fresh: Path, tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "stale.xml").write_bytes(b"<old/>")
    (tmp_path / "keep.txt").write_text("not generated")
    paths = write_samples(tmp_path)
    again = _tree_bytes(tmp_path)
    assert again.pop("keep.txt") == b"not generated"
    assert "files/stale.xml" not in again
    assert again == _tree_bytes(fresh)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == sorted(again)


def test_committed_samples_are_current(fresh: Path) -> None:
    if not COMMITTED.exists():
        pytest.fail("sample_reports/ is missing: run python scripts/make_samples.py")
    committed = _tree_bytes(COMMITTED)
    generated = _tree_bytes(fresh)
    assert sorted(committed) == sorted(generated), "run python scripts/make_samples.py"
    stale = [name for name in generated if committed[name] != generated[name]]
    assert stale == [], "run python scripts/make_samples.py"


def test_sample_set_is_small_and_mixes_every_wrapper(fresh: Path) -> None:
    files = [p for p in fresh.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5 * 1024 * 1024
    assert len(files) < 400
    suffixes = {"".join(p.suffixes[-2:]) if p.name.endswith(".xml.gz") else p.suffix for p in files}
    assert {".zip", ".xml.gz", ".xml", ".eml", ".mbox", ".md"} <= suffixes
    readme = (fresh / "README.md").read_text()
    for story in build_world().stories:
        assert story.first_day.isoformat() in readme and f"{story.messages:,}" in readme


def _report_payloads(data: bytes, rel: str) -> list[bytes]:
    """The report(s) inside one sample item, as parsedmarc should see them.

    parsedmarc returns only the first report of a message, so a message with
    several report attachments is split into its attachments.
    """
    if not rel.endswith((".eml", ".mbox")):
        return [data]
    msg = email.message_from_bytes(data)
    attached = [p for p in msg.walk() if p.get_filename() and not p.is_multipart()]
    if len(attached) > 1:
        return [p.get_payload(decode=True) for p in attached]
    return [data]


def test_every_sample_parses_with_parsedmarc_as_the_report_placed_there(fresh: Path, world: World) -> None:
    expected: dict[str, list[ReportSpec]] = defaultdict(list)
    for pl in placements(world):
        expected[pl.path].append(pl.report)
    seen_types: set[str] = set()
    found: list[str] = []
    for rel, specs in sorted(expected.items()):
        path = fresh / rel
        items = [m.as_bytes() for m in mailbox.mbox(path)] if rel.endswith(".mbox") else [path.read_bytes()]
        ids = {s.report_id: s for s in specs}
        for item in items:
            if rel.endswith((".eml", ".mbox")):
                seen_types |= {p.get_content_type() for p in email.message_from_bytes(item).walk()}
            for data in _report_payloads(item, rel):
                parsed = _parse(data)
                assert parsed["report_type"] == "aggregate", rel
                report = parsed["report"]
                spec = ids[report["report_metadata"]["report_id"]]
                found.append(spec.report_id)
                lost = spec.records[0].count if spec.quirks.empty_reason else 0  # parsedmarc drops that record
                assert sum(r["count"] for r in report["records"]) == spec.messages - lost, rel
                if "multi-day" not in spec.tags:
                    assert len(report["records"]) == len(spec.records) - (1 if lost else 0), rel
    # every report exactly once, except the duplicate, which arrives three times
    counts = defaultdict(int)
    for report_id in found:
        counts[report_id] += 1
    assert set(counts) == {s.report_id for s in world.reports}
    assert sorted(n for n in counts.values() if n > 1) == [3]
    assert {"application/gzip", "application/zip", "application/x-zip-compressed", "application/octet-stream",
            "text/xml", "message/rfc822"} <= seen_types


# --------------------------------------------------------------------------- benchmark inputs


def test_big_report_has_exactly_n_records_and_n_distinct_ips() -> None:
    data = big_report_xml(50_000, 50_000, seed=3)
    assert data.count(b"<record>") == 50_000
    assert len(set(re.findall(rb"<source_ip>([^<]+)</source_ip>", data))) == 50_000
    assert big_report_xml(50_000, 50_000, seed=3) == data


def test_big_report_reuses_ips_without_duplicate_records_and_parses() -> None:
    data = big_report_xml(300, 100, seed=1, fmt="rfc9990")
    root = _tree(data)
    ns = {"d": RFC9990_NAMESPACE}
    records = root.findall("d:record", ns)
    assert len(records) == 300
    assert len({r.findtext("d:row/d:source_ip", namespaces=ns) for r in records}) == 100
    assert len({etree.tostring(r) for r in records}) == 300
    parsed = _parse(data)["report"]
    assert len(parsed["records"]) == 300
    with pytest.raises(ValueError):
        big_report_xml(10, 20)


def test_many_small_reports_are_distinct_and_valid() -> None:
    items = list(many_small_reports(40, seed=5))
    assert items == list(many_small_reports(40, seed=5))
    names = [name for name, _ in items]
    assert len(set(names)) == 40
    assert {n.rsplit(".", 1)[-1] for n in names} >= {"gz", "zip", "xml"}
    ids = {_parse(data)["report"]["report_metadata"]["report_id"] for _, data in items}
    assert len(ids) == 40
