"""dmarclens' own deterministic DMARC aggregate-report generator.

Why the project makes its own reports: real rua mailboxes cannot be shared,
and a parser or detector tested only on clean hand-written XML fails on the
first real mailbox. This package renders reports in the three XML dialects
with the quirks seen in the wild, wraps them the way receivers deliver them,
and simulates weeks of mail for three domains with planted stories (a burst
of DMARC-passing abuse through the domain's own Microsoft 365, a spoofing
burst, a DKIM regression, a new ESP) whose ground truth tests can check.

Public API (everything is deterministic; no wall clock, no global random):

* ``render_report(spec, fmt=None, quirks=None) -> bytes``
* wrappers: ``report_file``, ``report_filename``, ``gzip_bytes``, ``zip_bytes``,
  ``attachment_for``, ``report_email``, ``inline_report_email``,
  ``whole_body_gzip_email``, ``forward_email``, ``mbox_bytes``
* ``build_world(seed, days, start) -> World`` with ``.reports`` and ``.stories``
* ``write_samples(out_dir, *, seed=7, days=60, start=date(2026, 9, 1)) -> list[Path]``
* ``big_report_xml(n_records, n_ips, *, seed=1, fmt="rfc7489") -> bytes``
* ``many_small_reports(n, *, seed) -> Iterator[tuple[str, bytes]]``
"""

from __future__ import annotations

from .big import big_report_xml, many_small_reports
from .samples import Placement, placements, write_samples
from .spec import (
    FORMATS,
    NO_QUIRKS,
    RFC9990_NAMESPACE,
    DkimAuth,
    OverrideReason,
    PolicySpec,
    Quirks,
    RecordSpec,
    ReportFormat,
    ReportSpec,
    SpfAuth,
)
from .world import DomainSpec, Reporter, Source, Story, World, build_world
from .wrappers import (
    Attachment,
    MailMeta,
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
    wrap_xml,
    zip_bytes,
)
from .xmlgen import iter_report_text, render_report

__all__ = [
    "FORMATS",
    "NO_QUIRKS",
    "RFC9990_NAMESPACE",
    "Attachment",
    "DkimAuth",
    "DomainSpec",
    "MailMeta",
    "OverrideReason",
    "Placement",
    "PolicySpec",
    "Quirks",
    "RecordSpec",
    "ReportFormat",
    "ReportSpec",
    "Reporter",
    "Source",
    "SpfAuth",
    "Story",
    "World",
    "attachment_for",
    "big_report_xml",
    "build_world",
    "forward_email",
    "gzip_bytes",
    "inline_report_email",
    "iter_report_text",
    "many_small_reports",
    "mbox_bytes",
    "placements",
    "render_report",
    "report_email",
    "report_file",
    "report_filename",
    "report_subject",
    "whole_body_gzip_email",
    "wrap_xml",
    "write_samples",
    "zip_bytes",
]
