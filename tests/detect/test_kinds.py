"""Each anomaly kind: found where it was planted, quiet where the look-alike legitimate change is.

The world is generated, delivered as report files (with duplicates, a
re-send under a new id, a late batch and multi-day reports) and ingested
through the real pipeline (see conftest.py and worlds.py).
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import duckdb
import pytest

from dmarclens.detect.model import RANK

from . import worlds
from .conftest import Detected

POSITIVE = [c for c in worlds.CASES if c.positive]
NEGATIVE = [c for c in worlds.CASES if not c.positive]


@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: f"{c.kind}:{c.domain}")
def test_planted_event_is_reported_at_alert_level(detected: Detected, case: worlds.Case) -> None:
    found = [a for a in detected.of(case.domain, case.kind) if RANK[a.severity] >= RANK["medium"]]
    assert found, f"{case.note}: no {case.kind} at medium or above; got {[(a.kind, a.severity) for a in detected.of(case.domain)]}"
    start = worlds.day(case.start)
    assert any(abs((a.first_day - start).days) <= 1 for a in found), [a.first_day for a in found]


@pytest.mark.parametrize("case", NEGATIVE, ids=lambda c: f"{c.kind}:{c.domain}")
def test_legitimate_change_does_not_alert(detected: Detected, case: worlds.Case) -> None:
    loud = [a for a in detected.of(case.domain) if RANK[a.severity] >= RANK["medium"]]
    assert not loud, f"{case.note}: " + "; ".join(f"{a.kind} {a.severity}: {a.explanation}" for a in loud)


def test_seed_case_ranks_high_or_critical_with_its_range_and_evidence(detected: Detected) -> None:
    seed = detected.of("seed.example", "new_ip_range_in_authorized_provider")
    assert len(seed) == 1
    a = seed[0]
    assert a.severity in ("high", "critical")
    assert a.identity["ip_range"] == f"{worlds.NEW_NET}.0/24"
    assert a.identity["service"] == "Microsoft" and a.identity["asn"] == 8075
    assert a.dmarc == "pass" and a.passed == a.messages > 1000
    net = ipaddress.ip_network(f"{worlds.NEW_NET}.0/24")
    assert a.ips and all(ipaddress.ip_address(ip) in net for ip in a.ips)
    assert {"google.com", "Yahoo"} <= set(a.reporters)
    with duckdb.connect(str(detected.db), read_only=True) as con:
        known = {r[0] for r in con.execute("SELECT report_id FROM reports WHERE domain = 'seed.example'").fetchall()}
    assert a.report_ids and set(a.report_ids) <= known
    # the Microsoft volume jump is explained by the new range, not reported twice
    assert not detected.of("seed.example", "volume_spike")
    assert a.details["explains_volume_spike"]["messages"] > a.details["explains_volume_spike"]["expected"]


def test_new_range_without_extra_volume_stays_low(detected: Detected) -> None:
    rot = detected.of("rotate.example", "new_ip_range_in_authorized_provider")
    assert [a.severity for a in rot] == ["low"]
    assert "routine" in rot[0].explanation


def test_key_rotation_is_noticed_but_quiet(detected: Detected) -> None:
    rot = detected.of("keyrot.example", "new_identifier")
    assert len(rot) == 1 and rot[0].severity in ("info", "low")
    assert rot[0].identity["dkim_selector"] == "selector2"


def test_spoofing_burst_counts_failing_unauthorized_mail(detected: Detected) -> None:
    (a,) = detected.of("spoof.example", "spoofing_burst")
    assert a.dmarc == "fail" and a.passed == 0
    assert a.messages > 10 * a.expected
    assert a.severity == "high"  # p=none: forged mail reaches inboxes
    assert len(a.ips) >= 20


def test_regression_names_the_broken_mechanism(detected: Detected) -> None:
    (a,) = detected.of("regress.example", "auth_regression")
    assert a.identity["envelope_from"] == "amazonses.com"
    assert a.details["history_pass_rate"] >= 0.95 and a.details["pass_rate"] <= 0.05
    assert "aligned DKIM fell" in a.explanation
    assert (a.last_day - a.first_day) == timedelta(days=3)


def test_audience_shift_by_reporter_and_by_recipients(detected: Detected) -> None:
    (by_reporter,) = detected.of("audience.example", "audience_shift")
    assert by_reporter.identity == {"service": "Microsoft", "reporter": "Yahoo"}
    to = detected.of("envfrom.example", "audience_shift")
    assert to and to[0].details["new_recipient_domains"] >= 5
    assert set(to[0].details["examples"]) <= set(worlds.NEW_RECIPIENTS)


def test_lookalike_names_field_and_reason(detected: Detected) -> None:
    found = {a.details["field"]: a for a in detected.of("lookalike.example", "lookalike_identifier")}
    assert set(found) == {"envelope_from", "dkim_domain"}
    assert found["envelope_from"].identity == {"envelope_from": "lookaiike.example"}
    assert "look-alike" in found["envelope_from"].details["why"] or "away from" in found["envelope_from"].details["why"]


def test_dormant_source_is_told_once(detected: Detected) -> None:
    found = detected.of("dormant.example")
    assert [a.kind for a in found if RANK[a.severity] >= RANK["medium"]] == ["dormant_source_revived"]
    (revived,) = [a for a in found if a.kind == "dormant_source_revived"]
    assert revived.details["silent_days"] >= 30 and revived.identity["service"] == "Hetzner"


def test_nothing_judged_during_warmup(detected: Detected) -> None:
    first_judged = worlds.day(14)
    assert all(a.first_day >= first_judged for a in detected.anomalies)


def test_forwarding_and_lists_are_not_new_sources(detected: Detected) -> None:
    kinds = {(a.kind, a.identity.get("service")) for a in detected.of("forward.example")}
    assert not any(k == "new_source" for k, _ in kinds), kinds
    assert not any(k in ("spoofing_burst", "auth_regression") for k, _ in kinds), kinds
