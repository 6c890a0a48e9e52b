"""Traffic classes from generated reports: every rule of docs/identity.md, and config overrides."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from dmarclens.core.errors import ConfigError
from dmarclens.enrich import classify
from dmarclens.store.db import open_db
from tests.identity.conftest import rec, report

OWN_MTA = "198.51.100.7"  # passes SPF for 10 days, then fails: misconfigured (known network)
NEIGHBOUR = "198.51.100.8"  # same /24, fails with another tenant's valid DKIM: spoofed
ESP = "203.0.113.5"  # signs with its own d= as well; loses our DKIM: misconfigured (known DKIM)
FWD = "192.0.2.31"  # receiver says forwarded
ARC = "192.0.2.32"  # receiver saw arc=pass
KEEPS_DKIM = "192.0.2.33"  # our DKIM still verifies, DMARC failed anyway
GROUPS = "192.0.2.34"  # known forwarder (googlegroups.com envelope)
LIST = "192.0.2.35"  # our DKIM broken, list re-signs and passes SPF for its own domain
SPOOF = "192.0.2.66"  # nothing known
FAKE_LIST = "192.0.2.67"  # forged d=example.com signature + own SPF pass, but no own DKIM: spoofed
OVR_FWD = "100.64.7.7"  # marked forwarder in the config by IP range
OVR_AUTH = "100.64.9.9"  # marked authorized in the config by DKIM domain
EARLY = "192.0.2.99"  # fails on day 2: too little history to tell misconfigured from spoofed


def _history() -> list:  # type: ignore[type-arg]
    days = []
    for d in range(10):
        days.append(report(d, [
            rec(OWN_MTA, 50, spf=[("example.com", "pass")]),
            rec(ESP, 40, envelope_from="bounce.esp-mail.net",
                dkim=[("example.com", "s1", "pass"), ("esp-mail.net", "esp", "pass")],
                spf=[("bounce.esp-mail.net", "pass")]),
        ]))
    days.append(report(10, [
        rec(OWN_MTA, 30, spf=[("example.com", "fail")]),
        rec(NEIGHBOUR, 7, envelope_from="tenant.example", dkim=[("tenant.example", "k", "pass")],
            spf=[("tenant.example", "pass")]),
        rec(ESP, 20, envelope_from="bounce.esp-mail.net",
            dkim=[("example.com", "s1", "fail"), ("esp-mail.net", "esp", "pass")],
            spf=[("bounce.esp-mail.net", "pass")]),
        rec(FWD, 3, spf=[("example.com", "softfail")], reasons=[("forwarded", None)]),
        rec(ARC, 4, spf=[("example.com", "fail")], reasons=[("local_policy", "arc=pass as.1.google.com")]),
        rec(KEEPS_DKIM, 5, dkim=[("example.com", "s1", "pass")], dkim_eval="fail",
            spf=[("example.com", "softfail")]),
        rec(GROUPS, 6, envelope_from="googlegroups.com", dkim=[("example.com", "s1", "fail")],
            spf=[("googlegroups.com", "pass")]),
        rec(LIST, 8, envelope_from="lists.uni.example",
            dkim=[("example.com", "s1", "fail"), ("lists.uni.example", "list", "pass")],
            spf=[("lists.uni.example", "pass")]),
        rec(SPOOF, 9, spf=[("example.com", "fail")]),
        rec(FAKE_LIST, 2, envelope_from="promo77.test", dkim=[("example.com", "default", "fail")],
            spf=[("promo77.test", "pass")]),
        rec(OVR_FWD, 11, spf=[("example.com", "fail")]),
        rec(OVR_AUTH, 12, envelope_from="partner.example", dkim=[("partner-mailer.example", "p", "pass")],
            spf=[("partner.example", "pass")]),
    ]))
    days.append(report(2, [rec(EARLY, 1, spf=[("example.com", "fail")])], org="legacy.example"))
    return days


RULES = {
    "identity": {
        "overrides": [
            {"action": "forwarder", "ip": ["100.64.7.0/24"], "note": "alumni forwarding"},
            {"domain": "example.com", "action": "authorized", "dkim_domain": "partner-mailer.example"},
            {"domain": "other.example", "action": "forwarder", "ip": "203.0.113.0/24"},  # other domain only
        ]
    }
}


@pytest.fixture(scope="module")
def classified(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dmarclens.ingest.writer import ingest_paths
    from tests.identity.conftest import write_reports

    tmp = tmp_path_factory.mktemp("classify")
    db = tmp / "c.duckdb"
    ingest_paths([write_reports(tmp / "reports", _history())], db)
    with open_db(db) as con:
        con.execute("BEGIN")
        classify.refresh(con, classify.rules_from_settings(RULES))
        con.execute("COMMIT")
    return db


def _classes(db: Path, day_offset: int = 10) -> dict[str, tuple[str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT source_ip, traffic_class, class_reason FROM v_records WHERE day = DATE '2026-10-01' + ?",
            [day_offset],
        ).fetchall()
    return {ip: (cls, why) for ip, cls, why in rows}


def test_every_rule(classified: Path) -> None:
    got = _classes(classified)
    assert got[OWN_MTA] == ("misconfigured", "known_network 198.51.100.0/24")
    assert got[NEIGHBOUR] == ("spoofed", "unknown_source foreign_dkim")
    assert got[ESP] == ("misconfigured", "known_dkim esp-mail.net")
    assert got[FWD] == ("forwarded", "receiver_reason forwarded")
    assert got[ARC] == ("forwarded", "arc_pass")
    assert got[KEEPS_DKIM] == ("forwarded", "own_dkim_pass")
    assert got[GROUPS] == ("forwarded", "known_forwarder googlegroups.com")
    assert got[LIST] == ("forwarded", "dkim_broken_relay lists.uni.example")
    assert got[SPOOF] == ("spoofed", "unknown_source")
    assert got[FAKE_LIST] == ("spoofed", "unknown_source")
    assert _classes(classified, 2)[EARLY] == ("unknown", "too_little_history")


def test_config_overrides(classified: Path) -> None:
    got = _classes(classified)
    assert got[OVR_FWD] == ("forwarded", "override #1 forwarder")
    assert got[OVR_AUTH] == ("misconfigured", "override #2 authorized")
    # Override #3 names another policy domain: the ESP rows of example.com are untouched by it.
    assert got[ESP][1] == "known_dkim esp-mail.net"


def test_passing_mail_is_authorized_and_history_days_count(classified: Path) -> None:
    with duckdb.connect(str(classified), read_only=True) as con:
        rows = con.execute(
            "SELECT DISTINCT traffic_class, class_reason FROM v_records WHERE dmarc_pass ORDER BY 2").fetchall()
        assert rows == [("authorized", "dmarc_pass dkim"), ("authorized", "dmarc_pass spf")]
        assert con.execute("SELECT count(*) FROM records WHERE traffic_class IS NULL").fetchone() == (0,)
    # With a 1-day memory and a high bar, the own MTA is no longer "known": its failure is spoofing.
    with open_db(classified) as con:
        con.execute("BEGIN")
        changed = classify.refresh(con, classify.Rules(history_days=1, min_passing_messages=100))
        cls = con.execute("SELECT traffic_class FROM records WHERE source_ip = ? AND traffic_class <> 'authorized'",
                          [OWN_MTA]).fetchall()
        con.execute("ROLLBACK")
    assert changed >= 1 and cls == [("spoofed",)]


def test_refresh_is_idempotent(classified: Path) -> None:
    with open_db(classified) as con:
        con.execute("BEGIN")
        assert classify.refresh(con, classify.rules_from_settings(RULES)) == 0
        con.execute("ROLLBACK")


def test_cli_applies_overrides_from_config(classified: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "copy.duckdb"
    db.write_bytes(classified.read_bytes())
    cfg = tmp_path / "dmarclens.toml"
    cfg.write_text('[[identity.overrides]]\naction = "forwarder"\nenvelope_from = "promo77.test"\n')
    res = cli("enrich", "--no-dns", "--db", str(db), "--config", str(cfg), "--json")
    assert res.returncode == 0, res.stderr
    got = _classes(db)
    assert got[FAKE_LIST] == ("forwarded", "override #1 forwarder")
    assert got[OVR_FWD] == ("spoofed", "unknown_source")  # the earlier override is gone from this config


@pytest.mark.parametrize("bad", [
    {"identity": {"overrides": [{"action": "trust", "ip": "192.0.2.1"}]}},
    {"identity": {"overrides": [{"action": "forwarder"}]}},
    {"identity": {"overrides": [{"action": "forwarder", "ip": "300.1.1.1"}]}},
    {"identity": {"overrides": [{"action": "forwarder", "ipaddr": "192.0.2.1"}]}},
    {"identity": {"history_days": 0}},
])
def test_bad_config_is_a_config_error(bad: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError):
        classify.rules_from_settings(bad)
