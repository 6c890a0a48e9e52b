"""sample_reports/ ingests completely, and what lands in DuckDB matches the
generator's own ground truth, per reporter and per day."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest

from dmarclens.generator import build_world
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def world():
    return build_world(seed=7, days=60)


def _q(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_demo_ingests_every_sample(tmp_path: Path, samples_dir: Path, world) -> None:
    db = tmp_path / "demo.duckdb"
    res = run_cli("demo", "--db", str(db), "--no-dashboard", "--samples", str(samples_dir))
    assert res.returncode == 0, res.stderr
    n_reports = len({(r.org_name, r.report_id, r.domain) for r in world.reports})
    assert _q(db, "SELECT count(*) FROM reports") == [(n_reports,)]
    rejected = _q(db, "SELECT origin, member, reason FROM ingest_items WHERE outcome = 'rejected'")
    assert rejected == []
    # The forwarded copy and the renamed copy arrive as duplicates, counted once.
    assert _q(db, "SELECT count(*) FROM ingest_items WHERE outcome = 'duplicate'") == [(2,)]
    # a second demo run stores nothing new
    again = run_cli("demo", "--db", str(db), "--no-dashboard", "--samples", str(samples_dir))
    assert again.returncode == 0
    assert _q(db, "SELECT count(*) FROM reports") == [(n_reports,)]


def test_totals_per_reporter_match_the_generator(sample_db: Path, world) -> None:
    expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    seen = set()
    for spec in world.reports:
        key = (spec.org_name, spec.report_id, spec.domain)
        if key in seen:
            continue
        seen.add(key)
        expected[(spec.org_name, spec.domain)][0] += 1
        expected[(spec.org_name, spec.domain)][1] += spec.messages
    got = {
        (org, domain): [n, m]
        for org, domain, n, m in _q(
            sample_db, "SELECT org_name, domain, count(*), sum(message_count) FROM reports GROUP BY 1, 2"
        )
    }
    assert got == dict(expected)


def test_daily_totals_per_domain_match_the_generator(sample_db: Path, world) -> None:
    """Day-long reports land on their day exactly (multi-day ones are pro-rated, checked elsewhere)."""
    from datetime import UTC, datetime

    expected: dict[tuple[str, str], int] = defaultdict(int)
    seen = set()
    for spec in world.reports:
        key = (spec.org_name, spec.report_id, spec.domain)
        if key in seen or spec.end - spec.begin > 86400:
            continue
        seen.add(key)
        day = datetime.fromtimestamp(spec.begin, UTC).date().isoformat()
        expected[(day, spec.domain)] += spec.messages
    got = {(d, dom): int(n) for d, dom, n in _q(
        sample_db, """SELECT r.day::VARCHAR, p.domain, sum(r.count) FROM records r JOIN reports p USING (report_key)
                      WHERE p.span_seconds <= 86400 GROUP BY 1, 2""")}
    assert got == {k: v for k, v in expected.items() if v}


@pytest.mark.parametrize(
    ("reporter", "fmt", "spot"),
    [
        ("google.com", "rfc7489", "envelope_to IS NULL"),
        ("Enterprise Outlook", "rfc7489", "envelope_to IS NOT NULL"),
        ("Yahoo", "rfc7489", "TRUE"),
        ("Mimecast", "rfc7489", "TRUE"),
        ("comcast.net", "rfc7489", "TRUE"),
        ("receiver.example", "rfc9990", "TRUE"),
        ("Legacy ISP", "draft", "TRUE"),
    ],
)
def test_one_report_per_reporter_style_has_golden_values(sample_db: Path, world, reporter: str, fmt: str,
                                                         spot: str) -> None:
    """The first report of each reporter: policy, counts and auth results as the generator wrote them."""
    specs = sorted((s for s in world.reports if s.org_name == reporter), key=lambda s: (s.begin, s.domain))
    assert specs, reporter
    spec = specs[0]
    row = _q(sample_db, f"""SELECT report_key, format, p, adkim, aspf, record_count, message_count, np, testing
                           FROM reports WHERE org_name = '{reporter}' AND report_id = '{spec.report_id}'""")
    assert len(row) == 1, (reporter, spec.report_id)
    key, got_fmt, p, adkim, aspf, _nrec, messages, np, testing = row[0]
    assert got_fmt == fmt
    assert p == spec.policy.p and adkim == (spec.policy.adkim or "r") and aspf == (spec.policy.aspf or "r")
    assert messages == spec.messages
    if fmt == "rfc9990":
        assert (np, testing) == (spec.policy.np, spec.policy.testing)
    recs = _q(sample_db, f"""SELECT source_ip, sum(count), bool_and(dmarc_pass), any_value(dkim)
                             FROM records WHERE report_key = '{key}' AND {spot} GROUP BY 1""")
    by_ip = {ip: (n, ok, dkim) for ip, n, ok, dkim in recs}
    for rec in spec.records:
        n, ok, dkim = by_ip[rec.source_ip]
        assert n >= rec.count
        assert ok == (rec.dkim_eval.lower() == "pass" or rec.spf_eval.lower() == "pass")
        assert [d["domain"] for d in dkim] == [a.domain.lower() for a in rec.dkim] or n > rec.count


def test_ingest_json_summary_on_samples(tmp_path: Path, samples_dir: Path) -> None:
    res = run_cli("ingest", str(samples_dir / "files"), "--db", str(tmp_path / "f.duckdb"), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) >= {"stored", "duplicates", "rejected", "records", "messages", "seconds"}
    assert out["stored"] == 128 and out["duplicates"] == 1 and out["rejected"] == []
