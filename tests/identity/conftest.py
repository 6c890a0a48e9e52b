"""Helpers for the sender-identity tests: reports built with dmarclens' own
generator, rendered to XML files, ingested through the real pipeline into a
DuckDB file under tmp_path. DNS comes from the shared ``dns_server`` fixture
(tests/servers/dns.py, a real UDP/TCP server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from dmarclens.generator import (
    DkimAuth,
    OverrideReason,
    PolicySpec,
    RecordSpec,
    ReportSpec,
    SpfAuth,
    render_report,
)

DAY0 = date(2026, 10, 1)

__all__ = ["DAY0", "DkimAuth", "OverrideReason", "RecordSpec", "SpfAuth", "report", "rec"]


def rec(
    ip: str,
    count: int = 10,
    *,
    header_from: str = "example.com",
    envelope_from: str | None = None,
    dkim: Sequence[tuple[str, str, str]] = (),
    spf: Sequence[tuple[str, str]] = (),
    dkim_eval: str | None = None,
    spf_eval: str | None = None,
    reasons: Sequence[tuple[str, str | None]] = (),
) -> RecordSpec:
    """One record; the aligned results default to what the raw results say (relaxed)."""
    def aligned(d: str) -> bool:
        return d == header_from or d.endswith("." + header_from) or header_from.endswith("." + d)

    if dkim_eval is None:
        dkim_eval = "pass" if any(r == "pass" and aligned(d) for d, _, r in dkim) else "fail"
    if spf_eval is None:
        spf_eval = "pass" if any(r == "pass" and aligned(d) for d, r in spf[:1]) else "fail"
    return RecordSpec(
        source_ip=ip, count=count, header_from=header_from,
        disposition="none", dkim_eval=dkim_eval, spf_eval=spf_eval,
        envelope_from=envelope_from or (spf[0][0] if spf else header_from),
        dkim=tuple(DkimAuth(d, s, r) for d, s, r in dkim),
        spf=tuple(SpfAuth(d, r) for d, r in spf),
        reasons=tuple(OverrideReason(t, c) for t, c in reasons),
    )


def report(day: date | int, records: list[RecordSpec], *, domain: str = "example.com",
           org: str = "google.com", p: str = "none") -> ReportSpec:
    """A one-day report from ``org`` about ``domain``; ``day`` may be an offset from DAY0."""
    if isinstance(day, int):
        day = DAY0 + timedelta(days=day)
    begin = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return ReportSpec(
        org_name=org, email=f"noreply-dmarc@{org}", report_id=f"{org}-{domain}-{day.isoformat()}",
        begin=begin, end=begin + 86399, policy=PolicySpec(domain=domain, p=p), records=records,
        receiver=org,
    )


def write_reports(folder: Path, specs: Sequence[ReportSpec]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n, spec in enumerate(specs):
        (folder / f"{n:04d}-{spec.report_id}.xml").write_bytes(render_report(spec))
    return folder


@pytest.fixture
def ingest_specs(tmp_path: Path) -> Callable[..., Path]:
    """Render specs to files and ingest them into ``tmp_path/identity.duckdb``; return the DB path."""
    def run(specs: Sequence[ReportSpec], db_name: str = "identity.duckdb") -> Path:
        from dmarclens.ingest.writer import ingest_paths

        folder = write_reports(tmp_path / f"reports-{db_name}", specs)
        db = tmp_path / db_name
        summary = ingest_paths([folder], db)
        assert summary.rejected == 0, summary.to_json()
        assert summary.stored == len(specs)
        return db

    return run
