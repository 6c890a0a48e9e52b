"""Explanations are one plain sentence that cites the numbers stored with the finding."""

from __future__ import annotations

import re

from .conftest import Detected


def _n(value: float) -> str:
    return f"{int(round(value)):,}"


def test_every_explanation_cites_its_day_and_message_count(detected: Detected) -> None:
    assert detected.anomalies
    for a in detected.anomalies:
        text = a.explanation
        assert a.first_day.isoformat() in text, text
        if a.last_day != a.first_day:
            assert a.last_day.isoformat() in text, text
        cited = a.failed if a.kind == "auth_regression" else a.messages
        assert _n(cited) in text, (a.kind, cited, text)
        assert text.endswith(".") and "\n" not in text
        assert text.count(". ") == 0, f"more than one sentence: {text}"


def test_baseline_kinds_cite_expected_and_peak(detected: Detected) -> None:
    checked = 0
    for a in detected.anomalies:
        if a.kind not in ("volume_spike", "spoofing_burst"):
            continue
        checked += 1
        d = a.details
        assert _n(a.expected) in a.explanation
        assert d["peak_day"] in a.explanation
        assert _n(d["peak_messages"]) in a.explanation and _n(d["peak_expected"]) in a.explanation
    assert checked >= 2


def test_range_explanation_cites_provider_totals(detected: Detected) -> None:
    (a,) = detected.of("seed.example", "new_ip_range_in_authorized_provider")
    d = a.details
    for number in (d["service_messages"], d["service_expected"], d["added_messages"]):
        assert _n(number) in a.explanation
    assert a.identity["ip_range"] in a.explanation and "Microsoft" in a.explanation


def test_regression_cites_rates(detected: Detected) -> None:
    (a,) = detected.of("regress.example", "auth_regression")
    rates = re.findall(r"(\d+)%", a.explanation)
    assert str(round(a.details["history_pass_rate"] * 100)) in rates
    assert _n(a.details["total_messages"]) in a.explanation


def test_dormant_and_audience_cite_their_context(detected: Detected) -> None:
    (rev,) = detected.of("dormant.example", "dormant_source_revived")
    assert f"{rev.details['silent_days']} days" in rev.explanation and rev.details["last_seen"] in rev.explanation
    (aud,) = detected.of("audience.example", "audience_shift")
    assert "Yahoo" in aud.explanation and f"{aud.details['reporter_days_before']} days" in aud.explanation
