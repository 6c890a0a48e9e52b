"""Write ``sample_reports/``: the simulated world, delivered as a real rua
mailbox would hold it.

The layout mixes every wrapper on purpose, so that ``dmarclens ingest
sample_reports/`` exercises files, mail and mbox paths at once:

* ``files/`` -- Google ``.zip`` and Microsoft ``.xml.gz`` for example.com,
  the legacy reporter's weekly draft-schema ``.xml``;
* ``mail/mimecast/`` -- one ``.eml`` per day whose whole body is the gzip;
* ``mail/comcast/`` -- one ``.eml`` per reporting period holding the reports
  for all three domains (``application/x-zip-compressed``);
* ``mail/forwarded/`` -- a colleague forwarding a Google report mail
  (``message/rfc822``), the same report that also sits twice in ``files/``;
* ``mbox/`` -- Google (``application/zip``) and Microsoft
  (``application/gzip``) mail for the other two domains, Yahoo
  (``application/octet-stream`` named ``.xml.gz``) and the RFC 9990 reporter
  (gzip or uncompressed ``text/xml`` attachments, some reports as an inline
  XML body).
"""

from __future__ import annotations

import random
import shutil
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from .spec import ReportSpec
from .world import Reporter, World, build_world
from .wrappers import (
    Attachment,
    MailMeta,
    SubjectStyle,
    attachment_for,
    forward_email,
    gzip_bytes,
    inline_report_email,
    mbox_bytes,
    report_email,
    report_file,
    report_filename,
    report_subject,
    whole_body_gzip_email,
)
from .xmlgen import render_report

RUA_MAILBOX = "dmarc-rua@example.com"
GENERATED_DIRS = ("files", "mail", "mbox")
DUPLICATE_DAY = 9  # the Google example.com report of this day is delivered three times


@dataclass(frozen=True)
class Placement:
    """Where one report ended up (a file, or a message inside a file)."""

    report: ReportSpec
    path: str  # relative to the sample directory
    how: str  # "zip file", "mbox message, application/zip attachment", ...


def _when(rep: Reporter, spec: ReportSpec, seed: int) -> datetime:
    """When the report mail was sent: some hours after the period ended."""
    rng = random.Random(f"{seed}|mail|{spec.report_id}")
    hours = rng.uniform(*rep.delay_hours)
    return datetime.fromtimestamp(spec.end, tz=UTC) + timedelta(hours=hours, seconds=rng.randint(0, 59))


def _meta(rep: Reporter, spec: ReportSpec, seed: int, subject_style: SubjectStyle = "rfc") -> MailMeta:
    return MailMeta(
        from_addr=rep.mail_from,
        to_addr=RUA_MAILBOX,
        subject=report_subject(spec, subject_style),
        date=_when(rep, spec, seed),
        message_id=f"<{spec.report_id.replace('@', '.')}@{rep.receiver}>",
    )


class _Writer:
    def __init__(self, world: World, out_dir: Path) -> None:
        self.world = world
        self.out = out_dir
        self.written: list[Path] = []
        self.placements: list[Placement] = []
        self.mboxes: dict[str, list[tuple[bytes, str, datetime]]] = defaultdict(list)

    def write(self, rel: str, data: bytes) -> None:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.written.append(path)

    def place(self, spec: ReportSpec, rel: str, how: str) -> None:
        self.placements.append(Placement(spec, rel, how))

    def mail_to_mbox(self, box: str, rep: Reporter, data: bytes, when: datetime) -> None:
        self.mboxes[box].append((data, rep.mail_from, when))

    def flush_mboxes(self) -> None:
        for box, messages in sorted(self.mboxes.items()):
            messages.sort(key=lambda m: m[2])
            self.write(f"mbox/{box}", mbox_bytes(messages))


def _deliver(w: _Writer, seed: int) -> None:
    world = w.world
    reps = {r.key: r for r in world.reporters}
    dup_begin = int(datetime.combine(world.day(DUPLICATE_DAY), datetime.min.time(), UTC).timestamp())
    comcast_groups: dict[tuple[int, int], list[ReportSpec]] = defaultdict(list)
    for n, spec in enumerate(world.reports):
        rep = reps[spec.reporter]
        xml = render_report(spec)
        if rep.key == "google" and spec.domain == "example.com":
            name, data = report_file(spec, xml, "zip")
            w.write(f"files/{name}", data)
            w.place(spec, f"files/{name}", "zip file")
            if spec.begin == dup_begin:
                _duplicate(w, rep, spec, xml, data, seed)
        elif rep.key == "google":
            att = attachment_for(spec, xml, "zip")
            meta = _meta(rep, spec, seed)
            w.mail_to_mbox("google.com.mbox", rep, report_email([att], meta), meta.date)
            w.place(spec, "mbox/google.com.mbox", "mbox message, application/zip attachment")
        elif rep.key == "microsoft" and spec.domain == "example.com":
            name, data = report_file(spec, xml, "xml.gz")
            w.write(f"files/{name}", data)
            w.place(spec, f"files/{name}", "gzip file")
        elif rep.key == "microsoft":
            att = attachment_for(spec, xml, "gzip")
            meta = _meta(rep, spec, seed)
            text = "This is a DMARC aggregate report from Microsoft Corporation.\n"
            w.mail_to_mbox("outlook.com.mbox", rep, report_email([att], meta, text=text), meta.date)
            w.place(spec, "mbox/outlook.com.mbox", "mbox message, application/gzip attachment")
        elif rep.key == "yahoo":
            att = attachment_for(spec, xml, "octet-gz")
            meta = _meta(rep, spec, seed)
            w.mail_to_mbox("yahoo.com.mbox", rep, report_email([att], meta), meta.date)
            w.place(spec, "mbox/yahoo.com.mbox", "mbox message, application/octet-stream .xml.gz attachment")
        elif rep.key == "mimecast":
            gz_name = report_filename(spec, "xml.gz")
            meta = _meta(rep, spec, seed, "bare")
            eml = whole_body_gzip_email(gzip_bytes(xml, name=report_filename(spec, "xml")), gz_name, meta)
            rel = f"mail/mimecast/{report_filename(spec, 'xml')[:-4]}.eml"
            w.write(rel, eml)
            w.place(spec, rel, ".eml whose whole body is the gzip")
        elif rep.key == "comcast":
            comcast_groups[(spec.begin, spec.end)].append(spec)
        elif rep.key == "rfc9990":
            meta = _meta(rep, spec, seed, "lower")
            text = "DMARC aggregate report (RFC 9990), see attachment.\n"
            if n % 5 == 0:
                eml = inline_report_email(xml, meta)
                how = "mbox message, inline text/xml body"
            elif n % 5 == 1:
                eml = report_email([attachment_for(spec, xml, "xml")], meta, text=text)
                how = "mbox message, uncompressed text/xml attachment"
            else:
                eml = report_email([attachment_for(spec, xml, "gzip")], meta, text=text)
                how = "mbox message, application/gzip attachment"
            w.mail_to_mbox("receiver.example.mbox", rep, eml, meta.date)
            w.place(spec, "mbox/receiver.example.mbox", how)
        else:  # legacy: plain XML files
            name, data = report_file(spec, xml, "xml")
            w.write(f"files/{name}", data)
            w.place(spec, f"files/{name}", "plain .xml file")
    for (begin, end), specs in sorted(comcast_groups.items()):
        _comcast(w, reps["comcast"], begin, end, specs, seed)
    w.flush_mboxes()


def _duplicate(w: _Writer, rep: Reporter, spec: ReportSpec, xml: bytes, data: bytes, seed: int) -> None:
    """Deliver one report again: under another file name, and forwarded by mail."""
    name = report_filename(spec, "zip", unique_id=spec.report_id)
    w.write(f"files/{name}", data)
    w.place(spec, f"files/{name}", "zip file (duplicate: same report, other name)")
    meta = _meta(rep, spec, seed)
    original = report_email([attachment_for(spec, xml, "zip")], meta)
    fwd_meta = MailMeta(
        from_addr="it-admin@example.com",
        to_addr=RUA_MAILBOX,
        subject=f"Fwd: {meta.subject}",
        date=meta.date + timedelta(hours=26),
        message_id=f"<fwd.{spec.report_id}@example.com>",
    )
    rel = f"mail/forwarded/fwd-{spec.receiver}!{spec.domain}!{spec.begin}.eml"
    w.write(rel, forward_email(original, fwd_meta))
    w.place(spec, rel, ".eml forwarding the report mail as message/rfc822 (duplicate)")


def _comcast(w: _Writer, rep: Reporter, begin: int, end: int, specs: list[ReportSpec], seed: int) -> None:
    """One message carrying the reports for every domain of the period."""
    atts: list[Attachment] = []
    for spec in specs:
        atts.append(attachment_for(spec, render_report(spec), "x-zip", member_name="dmarc_report.xml"))
    first = specs[0]
    meta = MailMeta(
        from_addr=rep.mail_from,
        to_addr=RUA_MAILBOX,
        subject=f"DMARC aggregate reports from comcast.net ({len(specs)} domains)",
        date=_when(rep, first, seed),
        message_id=f"<{begin}.{end}.reports@comcast.net>",
    )
    text = "Attached are DMARC aggregate reports, one per policy domain.\n"
    rel = f"mail/comcast/comcast.net!{begin}!{end}.eml"
    w.write(rel, report_email(atts, meta, text=text))
    for spec in specs:
        w.place(spec, rel, f"one of {len(specs)} application/x-zip-compressed attachments in one message")


def write_samples(
    out_dir: Path, *, seed: int = 7, days: int = 60, start: date = date(2026, 9, 1)
) -> list[Path]:
    """Regenerate the sample set in ``out_dir`` and return the files written.

    The generator-owned subfolders (``files/``, ``mail/``, ``mbox/``) are
    emptied first so no stale file from an older world survives; anything
    else in ``out_dir`` is left alone. ``README.md`` is rewritten with the
    stories' dates and numbers taken from the same world, so the document
    cannot drift from the data.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in GENERATED_DIRS:
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    world = build_world(seed, days, start)
    writer = _Writer(world, out_dir)
    _deliver(writer, seed)
    from .readme import render_readme  # local import: only the sample writer needs it

    readme = out_dir / "README.md"
    readme.write_text(render_readme(world, writer.placements, writer.written, out_dir), encoding="utf-8")
    # Mail files keep their CRLF line ends and archives are binary: stop git
    # from normalizing them, or a checkout would no longer be byte-identical.
    attributes = out_dir / ".gitattributes"
    attributes.write_text(
        "# generated by dmarclens.generator: keep report files byte for byte\n* -text\n*.zip binary\n*.gz binary\n"
    )
    return sorted([*writer.written, readme, attributes])


def placements(world: World) -> list[Placement]:
    """Where each report of ``world`` goes, without writing anything (for tests)."""
    writer = _DryWriter(world, Path("."))
    _deliver(writer, world.seed)
    return writer.placements


class _DryWriter(_Writer):
    def write(self, rel: str, data: bytes) -> None:
        self.written.append(Path(rel))
