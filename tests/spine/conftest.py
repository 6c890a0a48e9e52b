"""Small report builders for the spine tests, on top of dmarclens.generator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dmarclens.generator.spec import DkimAuth, PolicySpec, RecordSpec, ReportSpec, SpfAuth

DAY0 = int(datetime(2026, 10, 5, tzinfo=UTC).timestamp())


def make_spec(
    *,
    report_id: str = "r-1",
    org: str = "google.com",
    domain: str = "example.com",
    begin: int = DAY0,
    span: int = 86399,
    fmt: str = "rfc7489",
    records: list[RecordSpec] | None = None,
    **policy: object,
) -> ReportSpec:
    recs = records or [
        RecordSpec(
            source_ip="40.107.22.10", count=120, header_from=domain, envelope_from=domain,
            dkim=(DkimAuth(domain, "selector1", "pass"),), spf=(SpfAuth(domain, "pass"),),
        ),
        RecordSpec(
            source_ip="203.0.113.66", count=7, header_from=domain, dkim_eval="fail", spf_eval="fail",
            disposition="none", envelope_from="bad.example", spf=(SpfAuth("bad.example", "fail"),),
        ),
    ]
    return ReportSpec(
        org_name=org, email=f"noreply-dmarc@{org}", report_id=report_id, begin=begin, end=begin + span,
        policy=PolicySpec(domain=domain, **policy), records=recs, receiver=org, fmt=fmt,  # type: ignore[arg-type]
    )


@pytest.fixture
def spec_factory():
    return make_spec
