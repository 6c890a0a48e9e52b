"""DNS posture against a real DNS server: an SPF include chain, p=none, shared
platforms used or unused according to the reports, DKIM selectors from the reports."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import duckdb
import pytest

from dmarclens.enrich import posture as pm
from dmarclens.enrich.rdns import enrich_db
from dmarclens.query.posture import posture, posture_dkim_selectors, posture_history, posture_spf_includes
from tests.identity.conftest import rec, report

SENDGRID_IP = "192.0.2.80"  # PTR under sendgrid.net: the SendGrid include is in use
OWN_IP = "198.51.100.25"  # inside the domain's own ip4: range


def _dkim_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture
def world(dns_server, ingest_specs):  # type: ignore[no-untyped-def]
    z = dns_server.zone
    # example.com: p=none, an include chain (own list -> Google), Microsoft 365 and SendGrid.
    z.add_txt("_dmarc.example.com", "v=DMARC1; p=none; rua=mailto:dmarc@example.com; pct=100")
    z.add_txt("example.com", "google-site-verification=abc")
    z.add_txt("example.com", "v=spf1 include:_spf.example.com include:spf.protection.outlook.com "
                             "include:sendgrid.net ~all")
    z.add_txt("_spf.example.com", "v=spf1 ip4:198.51.100.0/24 include:_spf.google.com -all")
    z.add_txt("_spf.google.com", "v=spf1 include:_netblocks.google.com ~all")
    z.add_txt("_netblocks.google.com", "v=spf1 ip4:35.190.247.0/24 ~all")
    z.add_txt("spf.protection.outlook.com", "v=spf1 ip4:40.92.0.0/15 -all")
    z.add_txt("sendgrid.net", "v=spf1 ip4:192.0.2.0/24 -all")
    z.add_txt("s1._domainkey.example.com", f"v=DKIM1; k=rsa; p={_dkim_key()}")
    z.add_txt("old._domainkey.example.com", "v=DKIM1; k=rsa; p=")
    z.add_host("o1.ptr1234.sendgrid.net", SENDGRID_IP)
    # strict.example: enforced policy, but +all and too many lookups.
    z.add_txt("_dmarc.strict.example", "v=DMARC1; p=reject; rua=mailto:d@strict.example")
    z.add_txt("strict.example", "v=spf1 " + " ".join(f"include:s{i}.strict.example" for i in range(11)) + " +all")
    for i in range(11):
        z.add_txt(f"s{i}.strict.example", "v=spf1 ip4:203.0.113.0/24 -all")
    # sub.example.com has no DMARC record of its own: it inherits example.com's.
    specs = [
        report(d, [
            rec(SENDGRID_IP, 40, envelope_from="example.com",
                dkim=[("example.com", "s1", "pass")], spf=[("example.com", "pass")]),
            rec(OWN_IP, 10, dkim=[("example.com", "old", "fail"), ("example.com", "gone", "fail")],
                spf=[("example.com", "pass")]),
        ]) for d in range(3)
    ]
    db = ingest_specs(specs)
    enrich_db(db, nameservers=[f"127.0.0.1:{dns_server.port}"], timeout=0.5)
    return dns_server, db


def test_include_chain_p_none_and_shared_platforms(world) -> None:  # type: ignore[no-untyped-def]
    server, db = world
    results = pm.posture_db(db, ["example.com"], nameservers=[f"127.0.0.1:{server.port}"], timeout=0.5)
    (p,) = results
    assert (p.dmarc.status, p.dmarc.p, p.dmarc.pct, p.dmarc.rua) == ("ok", "none", 100, ["mailto:dmarc@example.com"])
    assert p.dmarc.strength == "monitor"
    assert p.spf.status == "ok" and p.spf.all == "~all"
    # include x3, then include:_spf.google.com and include:_netblocks.google.com below them
    assert p.spf.lookups == 5
    inc = {i.include: i for i in p.spf.includes}
    assert inc["_spf.google.com"].depth == 2 and inc["_spf.google.com"].parent == "_spf.example.com"
    assert inc["_netblocks.google.com"].depth == 3
    assert inc["_spf.example.com"].platform is None and not inc["_spf.example.com"].multi_tenant
    assert inc["sendgrid.net"].platform == "SendGrid" and inc["sendgrid.net"].unused is False
    assert inc["sendgrid.net"].messages == 120
    assert inc["spf.protection.outlook.com"].platform == "Microsoft 365"
    assert inc["spf.protection.outlook.com"].unused is True
    assert inc["_spf.google.com"].unused is True
    dkim = {k.selector: k for k in p.dkim}
    assert (dkim["s1"].status, dkim["s1"].key_type, dkim["s1"].key_bits) == ("ok", "rsa", 2048)
    assert dkim["old"].status == "revoked" and dkim["gone"].status == "missing"
    text = "\n".join(p.findings)
    assert "p=none" in text
    assert "Microsoft 365 (spf.protection.outlook.com)" in text and "remove it" in text
    assert "DKIM selector gone._domainkey.example.com: missing" in text

    with duckdb.connect(str(db), read_only=True) as con:
        latest = posture(con, ("example.com",))
        assert latest is not None and latest.loc[0, "policy_strength"] == "monitor"
        assert latest.loc[0, "spf_lookups"] == 5 and latest.loc[0, "checked_at"] is not None
        check_id = int(latest.loc[0, "check_id"])
        incs = posture_spf_includes(con, (check_id,))
        assert incs is not None
        unused = set(incs[incs["unused"].fillna(False).astype(bool)]["include"])
        assert unused == {"spf.protection.outlook.com", "_spf.google.com", "_netblocks.google.com"}
        sel = posture_dkim_selectors(con, (check_id,))
        assert sel is not None and set(sel["selector"]) == {"s1", "old", "gone"}
        hist = posture_history(con, "example.com")
        assert hist is not None and len(hist) == 1


def test_lookup_limit_plus_all_inheritance_and_timeouts(world) -> None:  # type: ignore[no-untyped-def]
    server, _db = world
    server.zone.set_behaviour("_dmarc.slow.example", "timeout")
    got = {p.domain: p for p in pm.check_domains(
        ["strict.example", "sub.example.com", "slow.example"], nameservers=[f"127.0.0.1:{server.port}"],
        timeout=0.5)}
    strict = got["strict.example"]
    assert strict.dmarc.strength == "enforced"
    assert strict.spf.lookups == 11 and strict.spf.status == "permerror" and strict.spf.all == "+all"
    strict.findings = pm.findings_for(strict)
    assert any("11 DNS lookups" in f for f in strict.findings)
    assert any("+all" in f for f in strict.findings)
    sub = got["sub.example.com"]
    assert sub.dmarc.source == "_dmarc.example.com" and sub.dmarc.p == "none"
    assert sub.spf.status == "missing"
    assert got["slow.example"].dmarc.status == "timeout"


def test_cli_json_and_table(world, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, db = world
    res = cli("posture", "example.com", "strict.example", "--db", str(db),
              "--nameserver", f"127.0.0.1:{server.port}", "--timeout", "0.5", "--format", "json")
    assert res.returncode == 0, res.stderr
    data = {d["domain"]: d for d in json.loads(res.stdout)}
    assert data["example.com"]["dmarc"]["p"] == "none"
    assert data["example.com"]["spf"]["lookups"] == 5
    assert data["strict.example"]["dmarc"]["strength"] == "enforced"
    res = cli("posture", "example.com", "--db", str(db), "--nameserver", f"127.0.0.1:{server.port}")
    assert res.returncode == 0, res.stderr
    assert "monitor" in res.stdout and "Microsoft 365" in res.stdout
    bad = cli("posture", "example.com", "--db", str(db), "--nameserver", "dns.example")
    assert bad.returncode == 2


@pytest.mark.parametrize(("record", "strength"), [
    ("v=DMARC1; p=reject", "enforced"),
    ("v=DMARC1; p=quarantine; pct=50", "partial"),
    ("v=DMARC1; p=reject; sp=none", "partial"),
    ("v=DMARC1; p=reject; np=none", "partial"),
    ("v=DMARC1; p=REJECT; t=y", "partial"),
    ("v=DMARC1; p=none; rua=mailto:x@y", "monitor"),
    ("v=DMARC1; rua=mailto:x@y", "missing"),
])
def test_policy_strength(record: str, strength: str) -> None:
    tags = pm.parse_tags(record)
    status = "ok" if tags.get("p") in ("none", "quarantine", "reject") else "invalid"
    assert pm.DmarcPolicy(status, record, "_dmarc.x", tags).strength == strength


def test_dkim_key_facts() -> None:
    assert pm.dkim_key_facts("v=DKIM1; k=rsa; p=")[0] == "revoked"
    assert pm.dkim_key_facts("v=DKIM1; k=rsa")[0] == "invalid"
    assert pm.dkim_key_facts("v=DKIM1; k=rsa; p=not*base64")[0] == "invalid"
    ed = base64.b64encode(bytes(32)).decode()
    assert pm.dkim_key_facts(f"v=DKIM1; k=ed25519; p={ed}") == ("ok", "ed25519", 256)
    assert pm.platform_for_include("1234567.spf07.hubspotemail.net").name == "HubSpot"  # type: ignore[union-attr]
    assert pm.platform_for_include("_spf.example.com") is None


def test_dns_down_stores_unknown_and_exits_1(world, cli) -> None:  # type: ignore[no-untyped-def]
    server, db = world
    server.mode = "servfail"
    res = cli("posture", "example.com", "--db", str(db), "--nameserver", f"127.0.0.1:{server.port}",
              "--timeout", "0.3", "--format", "json")
    assert res.returncode == 1 and "DNS answered for none" in res.stderr
    (data,) = json.loads(res.stdout)
    assert data["dmarc"]["status"] == "servfail" and data["dmarc"]["strength"] == "unknown"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT policy_strength, spf_status FROM posture_checks").fetchall() == [
            ("unknown", "servfail")]
