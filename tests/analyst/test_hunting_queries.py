"""Every saved hunting query, run on the scenario world, returns the answer
worked out by hand from tests/analyst/scenario.py (and not the decoys).

Windows: ``days=30`` up to AS_OF (day 34) covers days 5..34.
"""

from __future__ import annotations

import sys
from datetime import date, timedelta
from typing import Any

import duckdb
import pytest

from dmarclens.query import saved
from tests.analyst.scenario import (
    AS_OF,
    DAYS,
    FORWARDER,
    LOOKALIKE,
    LOOKALIKE_FROM,
    M365,
    M365_NEW,
    NEW_TENANT_FROM,
    ONPREM,
    QUIET_LAST,
    SENDGRID,
    SPOOF_CN,
    SPOOF_RU,
    SUBDOMAIN_FROM,
    YAHOO_LAST,
    day,
    m365_google,
)

WINDOW = range(DAYS - 30, DAYS)  # days 5..34


def rows(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> list[dict[str, Any]]:
    cur = saved.run_saved(con, name, params)
    columns = [d[0] for d in cur.description]
    return [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]


def pick(result: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(r[k] for k in keys) for r in result]


def test_every_saved_query_has_a_known_answer_test() -> None:
    tested = {n[len("test_q_"):] for n in dir(sys.modules[__name__]) if n.startswith("test_q_")}
    shipped = {q.name for q in saved.list_queries()}
    assert len(shipped) >= 12
    assert shipped == tested, f"untested: {shipped - tested}, stale tests: {tested - shipped}"


def test_q_new_passing_sources(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "new_passing_sources")
    assert pick(result, "domain", "source_ip", "first_seen", "last_seen", "messages", "passed", "service_name",
                "country") == [
        ("example.com", M365_NEW, day(NEW_TENANT_FROM), AS_OF, 100, 100, "Microsoft 365", "IE"),
    ]
    # The lookalike sender is just as new but fails DMARC: not listed.
    assert LOOKALIKE not in {r["source_ip"] for r in result}
    # Replayed for the tenant's first day, only that day's mail counts.
    replay = rows(world_con, "new_passing_sources", as_of=day(NEW_TENANT_FROM), days=1)
    assert pick(replay, "source_ip", "messages", "last_seen") == [(M365_NEW, 20, day(NEW_TENANT_FROM))]
    assert rows(world_con, "new_passing_sources", as_of=day(NEW_TENANT_FROM + 1), days=1) == []
    assert rows(world_con, "new_passing_sources", domain="example.net") == []


def test_q_dkim_signer_mismatch(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "dkim_signer_mismatch")
    assert pick(result, "domain", "signer", "selectors", "source_ips", "services", "messages", "first_seen",
                "last_seen") == [
        ("example.com", "sendgrid.net", ["smtpapi"], [SENDGRID], ["SendGrid"], 40 * 30, day(5), AS_OF),
    ]
    # news.example.com is signed by example.com: same organisation, not a mismatch.
    assert pick(rows(world_con, "dkim_signer_mismatch", days=DAYS), "messages") == [(40 * DAYS,)]


def test_q_spf_only_multitenant(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "spf_only_multitenant")
    assert pick(result, "domain", "source_ip", "service_name", "service_type", "envelope_froms", "messages",
                "days_seen") == [
        ("example.com", SENDGRID, "SendGrid", "Marketing", ["em123.example.com"], 40 * 30, 30),
    ]
    # The own relay also passes on SPF alone, but it is not a shared provider.
    assert ONPREM not in {r["source_ip"] for r in result}
    assert rows(world_con, "spf_only_multitenant", service_types="Email Provider") == []
    assert pick(rows(world_con, "spf_only_multitenant", service_types=" marketing "), "source_ip") == [(SENDGRID,)]


def _quantile_cont(values: list[int], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def test_q_volume_above_p95(world_con: duckdb.DuckDBPyConnection) -> None:
    def m365_total(i: int) -> int:  # Google + Microsoft + Yahoo (to day 27) + news.example.com (from 31)
        return m365_google(i) + 20 + (10 if i <= YAHOO_LAST else 0) + (8 if i >= SUBDOMAIN_FROM else 0)

    baseline = [m365_total(i) for i in range(DAYS - 1 - 28, DAYS - 1)]
    p95 = _quantile_cont(baseline, 0.95)
    today = m365_total(DAYS - 1)
    assert today == 1000 + 20 + 8
    result = rows(world_con, "volume_above_p95")
    assert pick(result, "domain", "source_ip", "day", "messages", "baseline_days_seen") == [
        ("example.com", M365, AS_OF, today, 28),
    ]
    assert result[0]["p95"] == pytest.approx(round(p95, 1))
    assert result[0]["ratio"] == pytest.approx(round(today / p95, 2))
    # The same IP for example.net is steady; the new tenant has too little history.
    assert rows(world_con, "volume_above_p95", factor=10.0) == []
    assert rows(world_con, "volume_above_p95", as_of=day(DAYS - 2)) == []


def test_q_new_dkim_selectors(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "new_dkim_selectors")
    assert pick(result, "domain", "signing_domain", "selector", "first_seen", "messages", "dkim_pass", "dmarc_pass",
                "source_ips") == [
        ("example.com", "example.com", "selector2", day(NEW_TENANT_FROM), 100, 100, 100, [M365_NEW]),
    ]
    everything = rows(world_con, "new_dkim_selectors", days=DAYS)
    assert sorted(pick(everything, "domain", "signing_domain", "selector")) == [
        ("example.com", "example.com", "selector1"),
        ("example.com", "example.com", "selector2"),
        ("example.com", "sendgrid.net", "smtpapi"),
        ("example.net", "example.net", "selector1"),
        ("quiet.example", "quiet.example", "selector1"),
    ]


def test_q_new_envelope_from(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "new_envelope_from")
    assert pick(result, "domain", "envelope_from", "first_seen", "messages", "passed", "source_ips") == [
        ("example.com", "3xarnp1e.com", AS_OF, 2, 0, [LOOKALIKE]),
        ("example.com", "examp1e.com", day(LOOKALIKE_FROM), 14, 0, [LOOKALIKE]),
    ]


def test_q_reporters_stopped(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "reporters_stopped")
    assert pick(result, "domain", "reporter", "reports", "messages", "last_report", "domain_last_report",
                "days_quiet") == [
        ("example.com", "Yahoo", YAHOO_LAST + 1, (YAHOO_LAST + 1) * 13, day(YAHOO_LAST), AS_OF, 7),
    ]
    # quiet.example stopped as a whole (its only reporter): that is silent_domains' job.
    assert rows(world_con, "reporters_stopped", quiet_days=7) == []
    assert rows(world_con, "reporters_stopped", min_reports=29) == []


def test_q_silent_domains(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "silent_domains", as_of=AS_OF, days=7)
    assert pick(result, "domain", "reports", "last_report", "days_silent", "reporters") == [
        ("quiet.example", QUIET_LAST + 1, day(QUIET_LAST), DAYS - 1 - QUIET_LAST, ["google.com"]),
    ]
    assert rows(world_con, "silent_domains", as_of=AS_OF, days=14) == []
    # Measured from today by default: this 2025 world has gone quiet everywhere.
    assert date.today() > AS_OF + timedelta(days=3)
    assert [r["domain"] for r in rows(world_con, "silent_domains")] == ["quiet.example", "example.com", "example.net"]


def test_q_forwarded_share(world_con: duckdb.DuckDBPyConnection) -> None:
    google = sum(
        m365_google(i) + 40 + 15 + 5  # example.com: M365, SendGrid, relay, spoofer
        + (20 if i >= NEW_TENANT_FROM else 0) + (8 if i >= SUBDOMAIN_FROM else 0)
        + (7 if i >= LOOKALIKE_FROM else 0) + (2 if i == DAYS - 1 else 0)
        + 30 + 2  # example.net
        + (5 if i <= QUIET_LAST else 0)  # quiet.example
        for i in WINDOW
    )
    google_failed = 30 * (5 + 2) + 2 * 7 + 2
    yahoo_days = YAHOO_LAST + 1 - WINDOW.start
    result = rows(world_con, "forwarded_share")
    assert pick(result, "reporter", "messages", "forwarded", "mailing_list", "failed") == [
        ("Enterprise Outlook", 30 * 30, 30 * 10, 0, 30 * 10),
        ("google.com", google, 0, 0, google_failed),
        ("Yahoo", yahoo_days * 13, 0, 0, yahoo_days * 3),
    ]
    assert [r["forwarded_share"] for r in result] == [pytest.approx(0.3333), 0, 0]


def test_q_reject_impact(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "reject_impact")
    assert pick(result, "domain", "source_ip", "policy_p", "failed", "already_rejected", "overridden",
                "would_reject") == [
        ("example.com", SPOOF_RU, "none", 150, 0, 0, 150),
        ("example.com", SPOOF_CN, "none", 69, 0, 0, 69),
        ("example.com", LOOKALIKE, "none", 16, 0, 0, 16),
        ("example.com", FORWARDER, "none", 300, 0, 300, 0),
    ]
    # example.net is at p=reject: its spoofer is already rejected, nothing left to show.
    assert rows(world_con, "reject_impact", domain="example.net") == []


def test_q_lookalike_envelope_from(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "lookalike_envelope_from")
    assert pick(result, "domain", "envelope_from", "distance", "homoglyph", "punycode", "messages", "passed",
                "first_seen", "source_ips") == [
        ("example.com", "examp1e.com", 1, True, False, 14, 0, day(LOOKALIKE_FROM), [LOOKALIKE]),
        ("example.com", "3xarnp1e.com", 4, True, False, 2, 0, AS_OF, [LOOKALIKE]),
    ]
    # Decoys: em123.example.com (own subdomain), lists.example.org (distance 3), spoof.invalid.
    assert not {"em123.example.com", "lists.example.org", "spoof.invalid"} & {r["envelope_from"] for r in result}
    widened = rows(world_con, "lookalike_envelope_from", max_distance=3)
    assert "lists.example.org" in {r["envelope_from"] for r in widened}


def test_q_failing_sources_by_country(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "failing_sources_by_country")
    assert pick(result, "country", "country_failed", "rank", "source_ip", "failed", "domains") == [
        ("DE", 300, 1, FORWARDER, 300, ["example.com"]),
        ("RU", 30 * (5 + 2), 1, SPOOF_RU, 30 * (5 + 2), ["example.com", "example.net"]),
        ("CN", 23 * 3, 1, SPOOF_CN, 23 * 3, ["example.com"]),
        ("NL", 16, 1, LOOKALIKE, 16, ["example.com"]),
    ]
    only_net = rows(world_con, "failing_sources_by_country", domain="example.net")
    assert pick(only_net, "country", "source_ip", "failed") == [("RU", SPOOF_RU, 60)]


def test_q_new_header_from_subdomains(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "new_header_from_subdomains")
    assert pick(result, "domain", "header_from", "first_seen", "last_seen", "messages", "passed",
                "source_ips") == [
        ("example.com", "news.example.com", day(SUBDOMAIN_FROM), AS_OF, 8 * 4, 8 * 4, [M365]),
    ]
    assert rows(world_con, "new_header_from_subdomains", days=3) == []


def test_q_source_activity(world_con: duckdb.DuckDBPyConnection) -> None:
    result = rows(world_con, "source_activity", ip=LOOKALIKE)
    assert pick(result, "day", "domain", "reporter", "messages", "passed", "failed", "envelope_froms") == [
        (day(LOOKALIKE_FROM), "example.com", "google.com", 7, 0, 7, ["examp1e.com"]),
        (AS_OF, "example.com", "google.com", 9, 0, 9, ["3xarnp1e.com", "examp1e.com"]),
    ]
    both = rows(world_con, "source_activity", ip=SPOOF_RU, days=1)
    assert pick(both, "domain", "messages", "dispositions") == [
        ("example.com", 5, ["none"]), ("example.net", 2, ["reject"]),
    ]
