"""Inputs for the ingest performance tests, built with dmarclens.generator.

Everything here is deterministic. Dates lie in the recent past so the
store's plausibility checks (no reports from the future) accept them.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from dmarclens.generator.spec import (
    DkimAuth,
    OverrideReason,
    PolicySpec,
    RecordSpec,
    ReportFormat,
    ReportSpec,
    SpfAuth,
)
from dmarclens.generator.xmlgen import render_report

DAY0 = int(datetime(2026, 10, 5, tzinfo=UTC).timestamp())


def record(i: int, rng: random.Random) -> RecordSpec:
    """One plausible record; ``i`` varies the shape (reasons, DKIM count, IPv6)."""
    ip = (f"2a01:111:f400:7e1a::{i % 4096:x}" if i % 7 == 3
          else f"{rng.choice(('40.107.22', '209.85.218', '167.89.54', '54.240.9'))}.{rng.randint(2, 254)}")
    passed = i % 5 != 4
    dkim: tuple[DkimAuth, ...] = ()
    if i % 3:
        dkim = (DkimAuth("example.com", "selector1", "pass" if passed else "fail"),)
    if i % 4 == 1:
        dkim += (DkimAuth("sendgrid.info", "smtpapi"),)
    env = "example.com" if passed else f"spoof{i % 11}.test"
    reasons = (OverrideReason("local_policy", "arc=pass"),) if i % 9 == 2 else ()
    if i % 13 == 6:
        reasons += (OverrideReason("mailing_list", None),)
    return RecordSpec(
        source_ip=ip,
        count=rng.randint(0 if i % 17 == 5 else 1, 300),
        header_from="example.com",
        disposition="none" if passed else "reject",
        dkim_eval="pass" if passed and dkim else "fail",
        spf_eval="pass" if passed else "fail",
        envelope_from=None if i % 6 == 0 else env,
        envelope_to="outlook.com" if i % 8 == 1 else None,
        dkim=dkim,
        spf=(SpfAuth(env, "pass" if passed else "softfail"),) if i % 10 else (),
        reasons=reasons,
    )


def report_spec(
    n_records: int = 12,
    *,
    fmt: ReportFormat = "rfc7489",
    begin: int = DAY0,
    span: int = 86399,
    seed: int = 1,
    report_id: str = "r-1",
) -> ReportSpec:
    """A Google-like report with ``n_records`` varied records."""
    rng = random.Random(f"perf|{seed}|{n_records}")
    policy = PolicySpec("example.com", p="reject", sp="quarantine", pct=100, fo="1")
    if fmt == "rfc9990":
        policy = PolicySpec("example.com", p="reject", pct=None, np="reject", testing="n", discovery_method="psl")
    return ReportSpec(
        org_name="google.com",
        email="noreply-dmarc-support@google.com",
        report_id=report_id,
        begin=begin,
        end=begin + span,
        policy=policy,
        records=[record(i, rng) for i in range(n_records)],
        receiver="google.com",
        fmt=fmt,
        extra_contact_info="https://support.google.com/a/answer/2466580",
        generator="perf-test" if fmt == "rfc9990" else None,
        errors=("one error",) if fmt == "rfc9990" else (),
    )


def render(spec: ReportSpec) -> bytes:
    return render_report(spec)
