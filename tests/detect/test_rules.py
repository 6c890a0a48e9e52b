"""The pure parts of detection, on hand-made inputs: thresholds, lookalikes, episodes, layering."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from dmarclens.detect.features import Params
from dmarclens.detect.model import Anomaly, identity_key
from dmarclens.detect.rules import Finding, episodes, explain_best, flag_volume, lookalike, passing_severity

D0 = date(2026, 5, 4)


@pytest.mark.parametrize(("candidate", "why"), [
    ("examp1e.com", "look-alike"), ("exarnple.com", "look-alike"), ("exmaple.com", "away from"),
    ("example-billing.com", "extra words"), ("secure-example.net", "extra words"), ("example.co", "another suffix"),
])
def test_lookalikes_are_caught(candidate: str, why: str) -> None:
    reason = lookalike("example.com", candidate)
    assert reason and why in reason


@pytest.mark.parametrize("candidate", [
    "example.com", "mail.example.com", "bounce.em4821.example.com", "amazonses.com", "mcsv.net",
    "sendgrid.info", "googlegroups.com", "exemplary-things.org",
])
def test_unrelated_or_own_names_are_not_lookalikes(candidate: str) -> None:
    assert lookalike("example.com", candidate) is None


def test_short_names_are_not_judged() -> None:
    assert lookalike("ab.com", "ac.com") is None


def test_episodes_join_days_one_apart() -> None:
    days = [D0, D0 + timedelta(days=1), D0 + timedelta(days=3), D0 + timedelta(days=4), D0 + timedelta(days=9)]
    assert episodes(days) == [(D0, D0 + timedelta(days=1)), (D0 + timedelta(days=3), D0 + timedelta(days=4)),
                              (D0 + timedelta(days=9), D0 + timedelta(days=9))]
    assert episodes(days, gap=2)[0] == (D0, D0 + timedelta(days=4))


def test_passing_severity_weighs_size_and_relative_increase() -> None:
    assert passing_severity(5000, 3.0) == "critical"
    assert passing_severity(5000, 0.6) == "high"
    assert passing_severity(300, 0.3) == "medium"
    assert passing_severity(300, 0.05) == "low"  # routine growth of a big sender
    assert passing_severity(5, 9.0) == "info"


def _series(obs: list[float], exp: float = 1000.0, sigma: float = 80.0, hmax: float = 1200.0) -> pd.DataFrame:
    return pd.DataFrame({
        "domain": "d.example", "service": "S", "day": [D0 + timedelta(days=i) for i in range(len(obs))],
        "obs": obs, "exp": exp, "sigma": sigma, "hmax": hmax, "orgs": 3, "org_list": [["a"]] * len(obs),
    })


def test_one_day_jump_needs_z_ratio_and_precedent() -> None:
    p = Params()
    df = flag_volume(_series([1000, 1010, 2500, 990]), p)
    assert list(df["flag"]) == [False, False, True, False]
    # the same jump when the series has seen 2,000 on that weekday before is a campaign, not a spike
    assert not flag_volume(_series([1000, 1010, 2500, 990], hmax=2000), p)["flag"].any()


def test_sustained_rise_flags_the_whole_run() -> None:
    p = Params()
    df = flag_volume(_series([1000, 1350, 1400, 1450, 1000]), p)
    assert list(df["flag"]) == [False, True, True, True, False]
    assert df["sustained"].sum() == 3
    # two elevated days are not a run
    assert not flag_volume(_series([1000, 1400, 1450, 1000]), p)["flag"].any()


def _f(kind: str, service: str, first: date, last: date, messages: int, expected: float, severity: str,
       **details: object) -> Finding:
    return Finding(kind, "d.example", {"service": service}, first, last, messages, expected, messages, 0,
                   severity, 1.0, dict(details))


def test_explain_best_prefers_the_new_range_over_the_provider_spike() -> None:
    spike = _f("volume_spike", "Microsoft", D0, D0 + timedelta(days=2), 9000, 3000, "critical")
    rng = _f("new_ip_range_in_authorized_provider", "Microsoft", D0, D0 + timedelta(days=6), 6500, 0, "high",
             added_total=5500)
    other = _f("volume_spike", "SendGrid", D0, D0, 900, 300, "high")
    kept = explain_best([spike, rng, other])
    assert [f.kind for f in kept] == ["new_ip_range_in_authorized_provider", "volume_spike"]
    assert rng.severity == "critical" and rng.details["explains_volume_spike"]["messages"] == 9000


def test_explain_best_keeps_a_spike_the_range_does_not_explain() -> None:
    spike = _f("volume_spike", "Microsoft", D0, D0, 9000, 3000, "critical")
    rng = _f("new_ip_range_in_authorized_provider", "Microsoft", D0, D0, 200, 0, "low", added_total=100)
    assert len(explain_best([spike, rng])) == 2


def test_anomaly_ids_are_deterministic_and_json_shape() -> None:
    a = Anomaly("volume_spike", "high", "d.example", {"asn": 8075, "service": "Microsoft", "ip_range": None},
                D0, D0, 10, 2.0, 10, 0, "x.")
    b = Anomaly("volume_spike", "low", "d.example", {"service": "Microsoft", "asn": 8075}, D0, D0, 99, 5.0, 99, 0, "y.")
    assert a.id == b.id and len(a.id) == 16
    assert identity_key(a.identity) == "service=Microsoft|asn=8075"
    j = a.to_json()
    assert list(j["identity"]) == ["service", "asn"] and j["dmarc"] == "pass" and j["expected"] == 2.0
