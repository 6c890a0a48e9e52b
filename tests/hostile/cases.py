"""The hostile-input catalogue: every case is built here, by code, at test time.

Why a catalogue and not committed files: bombs and 100 MB nodes must not sit
in git, and a case written as code says exactly what makes it hostile. Each
case carries the decision dmarclens takes for it (rejected with a reason,
stored as-is, stored with values repaired) and that decision is what the
tests assert; docs/reliability.md holds the same table for people.

Every case is one file in a batch folder (``name``); ``mail`` cases are whole
messages, which the IMAP test also appends to a real Dovecot mailbox.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dmarclens.generator import (
    Attachment,
    DkimAuth,
    MailMeta,
    OverrideReason,
    PolicySpec,
    RecordSpec,
    ReportSpec,
    SpfAuth,
    attachment_for,
    forward_email,
    gzip_bytes,
    render_report,
    report_email,
)

DAY0 = int(datetime(2026, 10, 5, tzinfo=UTC).timestamp())
WHEN = datetime(2026, 10, 6, 8, 0, tzinfo=UTC)
OWNED = "example.com"
SECRET = "dmarclens-hostile-XXE-secret-4f1c"  # content of the local file the XXE case points at
GIB = 1024 * 1024 * 1024
MIB = 1024 * 1024


def spec(report_id: str, *, domain: str = OWNED, begin: int = DAY0, span: int = 86399,
         records: list[RecordSpec] | None = None, org: str = "google.com", **kw: object) -> ReportSpec:
    """A small daily report (two records, 127 messages) unless told otherwise."""
    recs = records or [
        RecordSpec(source_ip="40.107.22.10", count=120, header_from=domain, envelope_from=domain,
                   dkim=(DkimAuth(domain, "selector1", "pass"),), spf=(SpfAuth(domain, "pass"),)),
        RecordSpec(source_ip="203.0.113.66", count=7, header_from=domain, dkim_eval="fail", spf_eval="fail",
                   envelope_from="bad.example", spf=(SpfAuth("bad.example", "fail"),)),
    ]
    return ReportSpec(org_name=org, email=f"noreply-dmarc@{org}", report_id=report_id, begin=begin,
                      end=begin + span, policy=PolicySpec(domain=domain, p="quarantine"), records=recs,
                      receiver=org, **kw)  # type: ignore[arg-type]


def xml(report_id: str, **kw: object) -> bytes:
    return render_report(spec(report_id, **kw))


def one_record(ip: str = "40.107.22.10", count: int = 5, **kw: object) -> list[RecordSpec]:
    return [RecordSpec(source_ip=ip, count=count, header_from=OWNED, envelope_from=OWNED,
                       dkim=(DkimAuth(OWNED, "s1", "pass"),), spf=(SpfAuth(OWNED, "pass"),), **kw)]  # type: ignore[arg-type]


def meta(n: str, sender: str = "noreply-dmarc-support@google.com", subject: str | None = None) -> MailMeta:
    return MailMeta(sender, f"dmarc@{OWNED}", subject or f"Report Domain: {OWNED} Report-ID: {n}", WHEN,
                    f"<{n}@hostile.test>")


def mail_with(report_id: str, data: bytes, filename: str = "report.xml", content_type: str = "text/xml") -> bytes:
    """A report mail carrying ``data`` as its one attachment."""
    return report_email([Attachment(filename, data, content_type)], meta(report_id))


def good_mail(report_id: str) -> bytes:
    s = spec(report_id)
    return report_email([attachment_for(s, render_report(s), "gzip")], meta(report_id))


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1, old
    return data.replace(old, new, 1)


# --------------------------------------------------------------------------- archives and compression


def _deflate_zeros(size: int) -> tuple[bytes, int]:
    """Raw deflate of ``size`` zero bytes, streamed (never holds the expansion) + its CRC-32."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MIB)
    out = io.BytesIO()
    crc = 0
    left = size
    while left:
        n = min(left, MIB)
        out.write(comp.compress(chunk[:n]))
        crc = zlib.crc32(chunk[:n], crc)
        left -= n
    out.write(comp.flush())
    return out.getvalue(), crc


_ZEROS_CACHE: dict[int, tuple[bytes, int]] = {}


def deflated_zeros(size: int) -> tuple[bytes, int]:
    if size not in _ZEROS_CACHE:
        _ZEROS_CACHE[size] = _deflate_zeros(size)
    return _ZEROS_CACHE[size]


def raw_zip(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip built by hand from (name, deflated data, crc, claimed uncompressed size).

    By hand because ``zipfile`` would have to inflate-size the data itself;
    a bomb's header may claim any size, honest or not.
    """
    out = io.BytesIO()
    central = io.BytesIO()
    for name, data, crc, size in members:
        fname = name.encode()
        offset = out.tell()
        size32 = min(size, 0xFFFFFFFF)
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size32,
                              len(fname), 0))
        out.write(fname)
        out.write(data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data),
                                  size32, len(fname), 0, 0, 0, 0, 0, offset))
        central.write(fname)
    cd = central.getvalue()
    start = out.tell()
    out.write(cd)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(cd), start, 0))
    return out.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def zip_bomb(claimed: int | None = None) -> bytes:
    """One member of 1.1 GiB of zeros (about 1 MB compressed); ``claimed`` lies about its size."""
    size = GIB + 100 * MIB
    data, crc = deflated_zeros(size)
    return raw_zip([("report.xml", data, crc, size if claimed is None else claimed)])


def gzip_bomb() -> bytes:
    """A gzip stream that inflates to 1.1 GiB of zeros."""
    size = GIB + 100 * MIB
    data, crc = deflated_zeros(size)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + data + struct.pack("<II", crc, size & 0xFFFFFFFF)


def million_records_gz() -> bytes:
    """A well-formed report with 1,000,000 records, gzip-compressed (about 1 MB)."""
    head = replace_once(xml("million"), b"<record>", b"\x00SPLIT\x00<record>")
    head, rest = head.split(b"\x00SPLIT\x00", 1)
    tail = rest[rest.rindex(b"</record>") + len(b"</record>"):]
    rec = (b"<record><row><source_ip>40.107.22.10</source_ip><count>1</count><policy_evaluated>"
           b"<disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>"
           b"<identifiers><header_from>example.com</header_from></identifiers><auth_results/></record>\n")
    assert len(rec) * 1_000_000 < 256 * MIB  # under the inflation limit: refused for its size in records
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    parts = [comp.compress(head)]
    block = rec * 10_000
    for _ in range(100):
        parts.append(comp.compress(block))
    parts.append(comp.compress(tail))
    parts.append(comp.flush())
    return b"".join(parts)


# --------------------------------------------------------------------------- XML attacks


def _after_prolog(doc: bytes) -> bytes:
    return doc[doc.index(b"<feedback"):]


def billion_laughs() -> bytes:
    ents = [b'<!ENTITY lol0 "lol">'] + [
        b"<!ENTITY lol%d \"%s\">" % (i, b"".join(b"&lol%d;" % (i - 1) for _ in range(10))) for i in range(1, 10)
    ]
    doc = replace_once(xml("laughs"), b"<org_name>google.com</org_name>", b"<org_name>&lol9;</org_name>")
    return b'<?xml version="1.0"?>\n<!DOCTYPE feedback [' + b"".join(ents) + b"]>\n" + _after_prolog(doc)


def xxe(root: Path) -> bytes:
    secret = root / "xxe-secret.txt"
    secret.write_text(SECRET)
    doc = replace_once(xml("xxe"), b"<org_name>google.com</org_name>", b"<org_name>&xxe;</org_name>")
    return (b'<?xml version="1.0"?>\n<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file://' + str(secret).encode()
            + b'">]>\n' + _after_prolog(doc))


def doctype_plain() -> bytes:
    return b'<?xml version="1.0"?>\n<!DOCTYPE feedback SYSTEM "dmarc.dtd">\n' + _after_prolog(xml("dtd"))


def doctype_after_comment() -> bytes:
    return (b'<?xml version="1.0"?>\n<!-- ' + b"x" * 70_000 + b' -->\n<!DOCTYPE feedback PUBLIC "-//X//Y" "y.dtd">\n'
            + _after_prolog(xml("dtd2")))


def deep_nesting() -> bytes:
    doc = xml("deep")
    i = doc.index(b"<report_metadata>") + len(b"<report_metadata>")
    return doc[:i] + b"<x>" * 200_000 + b"y" + b"</x>" * 200_000 + doc[i:]


def huge_text_node() -> bytes:
    doc = xml("bigtext")
    return replace_once(doc, b"<org_name>google.com</org_name>", b"<org_name>" + b"A" * (100 * MIB) + b"</org_name>")


def utf16_bom() -> bytes:
    text = xml("utf16").decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
    return b"\xff\xfe" + text.encode("utf-16-le")


def cp1252_bytes() -> bytes:
    return replace_once(xml("cp1252"), b"<org_name>google.com</org_name>",
                        b"<org_name>google.com</org_name><extra_contact_info>\x93DMARC\x94 \xe9quipe</extra_contact_info>")


def without_element(doc: bytes, tag: bytes) -> bytes:
    start, end = doc.index(b"<" + tag + b">"), doc.index(b"</" + tag + b">") + len(tag) + 3
    return doc[:start] + doc[end:]


def truncated_xml() -> bytes:
    doc = xml("trunc")
    return doc[: int(len(doc) * 0.9)]


def html_page() -> bytes:
    return b"<html><head><title>Report</title></head><body><p>Your DMARC report</p></body></html>"


# --------------------------------------------------------------------------- mail


def mime_many_parts(n: int = 500) -> bytes:
    s = spec("parts")
    atts = [attachment_for(s, render_report(s), "gzip")] + [
        Attachment(f"note{i}.txt", b"hello", "text/plain") for i in range(n - 1)]
    return report_email(atts, meta("parts"))


def base64_garbage() -> bytes:
    head = (b"From: noreply-dmarc-support@google.com\r\nTo: dmarc@example.com\r\nSubject: Report Domain: "
            b"example.com\r\nMessage-ID: <b64@hostile.test>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\n'
            b'Content-Type: application/gzip; name="google.com!example.com!1!2.xml.gz"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="google.com!example.com!1!2.xml.gz"\r\n\r\n')
    return head + b"H4sI!!!!====@@@@not*base64*at*all####\r\n" * 50 + b"--zz--\r\n"


def forwarded(depth: int, report_id: str) -> bytes:
    msg = good_mail(report_id)
    for i in range(depth):
        msg = forward_email(msg, meta(f"{report_id}-fwd{i}", f"helpdesk{i}@example.com", "Fwd: DMARC report"))
    return msg


def zip_attachment_bomb() -> bytes:
    """A mail whose one zip attachment holds 40 members of 200 MB zeros: each under the
    per-report limit, 8 GB together."""
    data, crc = deflated_zeros(200 * MIB)
    z = raw_zip([(f"r{i}.xml", data, crc, 200 * MIB) for i in range(40)])
    return mail_with("zipbomb", z, "reports.zip", "application/zip")


def junk_with_escapes() -> bytes:
    return (b"From: offers@spam.example\r\nTo: dmarc@example.com\r\n"
            b"Subject: \x1b[2J\x1b[31mURGENT\x1b[0m \xe2\x80\xaegnp.exe\r\n"
            b"Message-ID: <esc@spam.example>\r\n\r\nBuy now\r\n")


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Case:
    """One hostile input and the outcome dmarclens must give it."""

    name: str  # file name in the batch folder
    build: Callable[[Path], bytes]
    outcome: str  # ingest_items.outcome every row of this input must have
    reason: str | None  # lower-case text every row's reason must contain (None: no reason at all)
    decision: str  # why, for docs/reliability.md
    mail: bool = False  # a whole mail (also appended to Dovecot in the IMAP test)
    sparse_size: int = 0  # make a sparse file this big instead of writing bytes
    rows: int = 1  # ingest_items rows this input produces
    tags: tuple[str, ...] = field(default=())


def _b(fn: Callable[[], bytes]) -> Callable[[Path], bytes]:
    return lambda _root: fn()


def _x(report_id: str, **kw: object) -> Callable[[Path], bytes]:
    return lambda _root: xml(report_id, **kw)


CONTROL = {
    "org": "Goo\u202egle\u0085 Inc.\u200b",
    "email": "dmarc\x1b@google.com",
    "extra": "line one\nline two\u009b31m",
    "report_id": "ctl\tid\u2066x",
    "header_from": "exa\u200bmple.com",
    "selector": "sel\u0090ector",
    "comment": "forwarded\u202e by list",
}
HTML = {
    "org": "<script>alert('org')</script>",
    "extra": "**bold** [click](javascript:alert(1)) <img src=x onerror=alert(2)>",
    "report_id": "html-<b>id</b>",
    "comment": "<iframe src=https://evil.example></iframe>",
    "envelope_from": "<b>evil</b>.example",
}


def control_chars() -> bytes:
    recs = [RecordSpec(source_ip="40.107.22.10", count=9, header_from=CONTROL["header_from"], envelope_from=OWNED,
                       dkim=(DkimAuth(OWNED, CONTROL["selector"], "pass"),), spf=(SpfAuth(OWNED, "pass"),),
                       reasons=(OverrideReason("local_policy", CONTROL["comment"]),))]
    s = spec(CONTROL["report_id"], org=CONTROL["org"], records=recs, extra_contact_info=CONTROL["extra"])
    s.email = CONTROL["email"]
    return render_report(s)


def html_markdown() -> bytes:
    recs = [RecordSpec(source_ip="40.107.22.11", count=4, header_from=OWNED, envelope_from=HTML["envelope_from"],
                       dkim=(DkimAuth(OWNED, "s1", "pass"),), spf=(SpfAuth(OWNED, "pass"),),
                       reasons=(OverrideReason("local_policy", HTML["comment"]),))]
    return render_report(spec(HTML["report_id"], org=HTML["org"], records=recs, extra_contact_info=HTML["extra"]))


def conflicting_copy() -> bytes:
    # Same reporter, id, domain and interval as conflict-a, different counts.
    return xml("conflict", records=one_record(count=999_999))


CASES: list[Case] = [
    # -- compression and archives
    Case("zip-bomb.zip", _b(zip_bomb), "rejected", "bomb",
         "1.1 GiB member (1 MB zip): refused from its header before inflating"),
    Case("zip-bomb-lying.zip", _b(lambda: zip_bomb(claimed=1000)), "rejected", "zip",
         "header claims 1 KB: inflation stops at the claimed size and the CRC fails"),
    Case("gzip-bomb.xml.gz", _b(gzip_bomb), "rejected", "bomb",
         "inflation stops at 256 MB; refused as a bomb"),
    Case("nested-once.zip", lambda _r: zip_of({"inner.zip": zip_of({"r.xml": xml("nested1")})}), "stored", None,
         "a zip holding a zipped report: one level of nesting is unpacked (archiving tools do this)"),
    Case("nested-deep.zip", lambda _r: zip_of({"a.zip": zip_of({"b.zip": zip_of({"r.xml": xml("nested3")})})}),
         "rejected", "not a dmarc aggregate report", "three levels of zip: only one is unpacked, the rest is refused"),
    Case("nested-bombs.zip", lambda _r: zip_of({f"b{i}.zip": zip_bomb() for i in range(5)}), "rejected", "bomb",
         "five zip bombs inside a zip: each member refused on its own, bounded memory", rows=5),
    Case("many-members.zip", lambda _r: zip_of({f"r{i}.xml": b"<a/>" for i in range(5000)}), "rejected",
         "5000 files", "5,000 members: refused before reading any (limit 50)"),
    Case("traversal.zip", lambda _r: zip_of({"../../etc/cron.d/evil.xml": xml("trav1"),
                                             "/abs/evil.xml": xml("trav2")}),
         "rejected", "path traversal", "member names with .. or an absolute path: refused per member (never "
         "extracted anyway)", rows=2),
    Case("truncated.xml.gz", lambda _r: gzip_bytes(xml("tgz"))[:-30], "rejected", "truncated gzip",
         "gzip stream cut short: refused, nothing half-stored"),
    Case("million-records.xml.gz", _b(million_records_gz), "rejected", "1,000,000 records",
         "1 M records (250 MB XML): counted at byte level and refused before parsing"),
    # -- XML attacks
    Case("billion-laughs.xml", _b(billion_laughs), "rejected", "doctype",
         "entity expansion: any DOCTYPE is refused before an XML parser runs"),
    Case("xxe.xml", xxe, "rejected", "doctype", "external entity to a local file: refused; the file's content "
         "never reaches the database"),
    Case("doctype-plain.xml", _b(doctype_plain), "rejected", "doctype", "a DOCTYPE without entities: refused too"),
    Case("doctype-late.xml", _b(doctype_after_comment), "rejected", "doctype",
         "a DOCTYPE after a 70 KB comment: still found (the whole prolog is checked)"),
    Case("deep-nesting.xml", _b(deep_nesting), "rejected", "nest", "200,000 nested elements: refused"),
    Case("huge-text-node.xml", _b(huge_text_node), "rejected", "longer than 1 mb",
         "a 100 MB text node: refused at byte level"),
    Case("truncated.xml", _b(truncated_xml), "rejected", "truncated xml",
         "XML cut at 90 %: refused (recovery would store part of it)"),
    # -- encodings
    Case("cp1252.xml", _b(cp1252_bytes), "stored", None, "non-UTF-8 bytes in a text field: stored (bytes dropped)"),
    Case("utf16-bom.xml", _b(utf16_bom), "stored", None, "UTF-16 with BOM: valid XML, transcoded and stored"),
    # -- values
    Case("negative-count.xml", _x("neg", records=one_record(count=-5)), "rejected", "negative message count",
         "a negative count would subtract mail from totals: whole report refused"),
    Case("huge-count.xml", _x("huge", records=one_record(count=10**23)), "rejected", "implausible message count",
         "count above 10^9 for one source and day: refused"),
    Case("nonnumeric-count.xml",
         lambda _r: replace_once(xml("nonnum"), b"<count>120</count>", b"<count>many</count>"),
         "stored", "1 record(s) skipped", "an unreadable count: that record skipped, the rest stored, the skip recorded"),
    Case("invalid-ip.xml", _x("badip", records=[*one_record(ip="999.1.2.3"), *one_record(ip="40.107.22.12")]),
         "stored", "1 record(s) skipped", "a source that is not an IP: record skipped and recorded, rest stored"),
    Case("ipv6-zone.xml", _x("zone", records=one_record(ip="fe80::1%eth0")), "stored", "zone id",
         "IPv6 with %zone: zone dropped (meaningless off-host), stored as fe80::1, repair recorded"),
    Case("begin-after-end.xml", lambda _r: xml("rev", begin=DAY0 + 86400, span=-86400), "rejected",
         "ends before it begins", "interval reversed: refused"),
    Case("year-1970.xml", lambda _r: xml("y1970", begin=0), "rejected", "before dmarc existed",
         "dates in 1970: a broken clock; refused"),
    Case("year-2100.xml", lambda _r: xml("y2100", begin=4102444800), "rejected", "in the future",
         "dates in 2100: refused (would also move every dashboard's date range)"),
    Case("span-10-years.xml", lambda _r: xml("span10", span=3650 * 86400), "rejected", "spans 3650 days",
         "10-year interval: refused before the day split (3,650 copies per record)"),
    Case("missing-org.xml", lambda _r: xml("noorg").replace(b"<org_name>google.com</org_name>", b""), "rejected",
         "org_name", "no org_name in a file (no mail sender to fall back on): refused"),
    Case("missing-report-id.xml", lambda _r: xml("norid").replace(b"<report_id>norid</report_id>", b""),
         "rejected", "report_id", "no report_id: refused (it is half of the report's identity)"),
    Case("empty-reason.xml", lambda _r: render_report(spec("emptyreason").with_quirks(empty_reason=True)), "stored",
         None, "an empty <reason/> (seen in the wild): removed before parsing so parsedmarc keeps the record"),
    Case("unknown-namespace.xml", lambda _r: replace_once(xml("ns"), b"<feedback>", b'<feedback xmlns="urn:x:evil">'),
         "stored", None, "an unknown namespace: stored; the namespace is recorded in reports.xml_namespace"),
    Case("conflict-a.xml", lambda _r: xml("conflict"), "stored", None, "first copy of a report id: stored"),
    Case("conflict-b.xml", _b(conflicting_copy), "duplicate", "different content; kept the first copy",
         "same report key, different counts: the first copy stays, the conflict is recorded"),
    Case("not-owned.xml", lambda _r: xml("foreign", domain="attacker.example"), "stored", "not one of your domains",
         "a report for a domain not in `domains`: stored apart (report_trust.owned = false, records in "
         "foreign_records), not shown by default"),
    Case("control-chars.xml", _b(control_chars), "stored", "control or invisible characters replaced",
         "C0/C1 controls, bidi overrides, zero-width characters in every string: replaced by U+FFFD "
         "(tabs and newlines by spaces), stored"),
    Case("html-markdown.xml", _b(html_markdown), "stored", None,
         "HTML and markdown in strings: stored verbatim (it is data; displays escape it)"),
    Case("outlook.msg", lambda _r: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504 + "__substg1.0_0037001F".encode(
        "utf-16-le") * 20, "rejected", "outlook .msg", "an Outlook .msg: refused with a hint to save as .eml"),
    # -- mail
    Case("oversize.eml", _b(lambda: b""), "rejected", "byte limit",
         "a 300 MB mail file: refused from its size, never read", sparse_size=300 * MIB),
    Case("mime-500-parts.eml", _b(mime_many_parts), "rejected", "more than 200 mime parts",
         "500 MIME parts: the whole mail refused (limit 200)", mail=True),
    Case("base64-garbage.eml", _b(base64_garbage), "rejected", "corrupt gzip",
         "an attachment that is not base64: decoded best-effort, refused as corrupt", mail=True),
    Case("forwarded-twice.eml", lambda _r: forwarded(2, "fwd2"), "stored", None,
         "a report forwarded inside a forwarded message: unwrapped and stored", mail=True),
    Case("forwarded-7-deep.eml", lambda _r: forwarded(7, "fwd7"), "rejected", "nests forwarded messages",
         "forwarded 7 levels deep: refused (limit 5)", mail=True),
    Case("zip-attachment-bomb.eml", _b(zip_attachment_bomb), "rejected", "bomb",
         "a zip attachment of 40 x 200 MB: the mail's total expansion is capped at 256 MB", mail=True),
    Case("empty-attachment.eml", lambda _r: mail_with("emptyatt", b"", "report.xml.gz", "application/gzip"),
         "rejected", "no report attachment", "an empty attachment: nothing to parse, the mail is refused", mail=True),
    Case("html-attachment.eml", lambda _r: mail_with("htmlatt", html_page()), "rejected", "no <feedback> element",
         "HTML pretending to be XML: refused", mail=True),
    Case("json-attachment.eml", lambda _r: mail_with("jsonatt", b'{"organization-name": 1, "x": [1, 2]}',
                                                     "report.json", "application/json"),
         "rejected", "not an smtp tls report", "JSON that is not TLS-RPT: refused", mail=True),
    Case("truncated-attachment.eml", lambda _r: mail_with("truncatt", truncated_xml()), "rejected", "truncated xml",
         "a truncated XML attachment: refused", mail=True),
    Case("missing-policy.eml", lambda _r: mail_with("nopol", without_element(xml("nopol"), b"policy_published")),
         "rejected", "policy_published", "no policy_published: refused", mail=True),
    Case("escape-subject.eml", _b(junk_with_escapes), "rejected", "no report attachment",
         "junk with ANSI escapes and a bidi override in the Subject: refused; the reason quotes the subject "
         "escaped, so logs and terminals stay clean", mail=True),
]

GOOD_IDS = [f"good-{i}" for i in range(6)]


def good_inputs() -> dict[str, bytes]:
    """Ordinary reports interleaved with the cases (file names sort between them)."""
    out: dict[str, bytes] = {}
    for i, rid in enumerate(GOOD_IDS):
        s = spec(rid, begin=DAY0 + i * 86400)
        name = ["aa", "gz", "mm", "nz", "tz", "zz"][i] + f"-{rid}"
        out[name + ".xml.gz"] = gzip_bytes(render_report(s))
    return out


GOOD_MESSAGES = 127 * len(GOOD_IDS)


def materialize(folder: Path, cases: list[Case] = CASES) -> None:
    """Write every case and the good reports into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        path = folder / case.name
        if case.sparse_size:
            with path.open("wb") as fh:
                fh.truncate(case.sparse_size)
        else:
            path.write_bytes(case.build(folder.parent))
    for name, data in good_inputs().items():
        (folder / name).write_bytes(data)
