"""Reverse DNS against a real DNS server: PTR hit, NXDOMAIN, timeout, SERVFAIL,
FCrDNS mismatch, IPv6, persistence and retry rules, and DNS with the database closed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from dmarclens.core.errors import ConfigError
from dmarclens.enrich.rdns import EnrichOptions, enrich_db, parse_nameserver, resolve_many, service_for
from tests.identity.conftest import rec, report

HIT_V4 = "192.0.2.10"  # PTR o1.ptr4242.sendgrid.net, forward-confirmed
NX = "192.0.2.20"  # no PTR
SLOW = "192.0.2.30"  # never answered
BROKEN = "192.0.2.40"  # SERVFAIL
MISMATCH = "192.0.2.50"  # PTR name resolves to another address
FWD_TIMEOUT = "192.0.2.60"  # PTR fine, forward lookup never answered
REFUSED = "192.0.2.70"  # REFUSED counts as servfail
HIT_V6 = "2001:db8:25::7"  # PTR mx1.example.net, AAAA confirms
ALL_IPS = [HIT_V4, NX, SLOW, BROKEN, MISMATCH, FWD_TIMEOUT, REFUSED, HIT_V6]


@pytest.fixture
def zone(dns_server):  # type: ignore[no-untyped-def]
    z = dns_server.zone
    z.add_host("o1.ptr4242.sendgrid.net", HIT_V4)
    z.set_behaviour(NX, "nxdomain")
    z.set_behaviour(SLOW, "timeout")
    z.set_behaviour(BROKEN, "servfail")
    z.set_behaviour(REFUSED, "refused")
    z.add_ptr(MISMATCH, "host.example.org")
    z.add_a("host.example.org", "198.51.100.99")
    z.add_ptr(FWD_TIMEOUT, "slow-forward.example.org")
    z.set_behaviour("slow-forward.example.org", "timeout")
    z.add_host("mx1.example.net", HIT_V6)
    return dns_server


def test_statuses_fcrdns_and_ipv6(zone) -> None:  # type: ignore[no-untyped-def]
    results = {r.ip: r for r in resolve_many(ALL_IPS, nameservers=[f"{zone.host}:{zone.port}"], timeout=0.4)}

    hit = results[HIT_V4]
    assert (hit.status, hit.reverse_dns, hit.fcrdns, hit.base_domain) == (
        "ok", "o1.ptr4242.sendgrid.net", True, "sendgrid.net")
    assert results[NX].status == "nxdomain" and results[NX].reverse_dns is None
    assert results[SLOW].status == "timeout"
    assert results[BROKEN].status == "servfail"
    assert results[REFUSED].status == "servfail"
    mismatch = results[MISMATCH]
    assert (mismatch.status, mismatch.reverse_dns, mismatch.fcrdns) == ("ok", "host.example.org", False)
    assert results[FWD_TIMEOUT].status == "ok" and results[FWD_TIMEOUT].fcrdns is None
    v6 = results[HIT_V6]
    assert (v6.status, v6.reverse_dns, v6.fcrdns, v6.base_domain) == ("ok", "mx1.example.net", True, "example.net")
    # The v6 lookup really went over ip6.arpa and was confirmed with AAAA, not A.
    asked = {(n, t) for n, t, _ in zone.queries}
    assert ("mx1.example.net", "AAAA") in asked and ("mx1.example.net", "A") not in asked


def test_nodata_and_cname_chain(dns_server) -> None:  # type: ignore[no-untyped-def]
    z = dns_server.zone
    z.add_a("1.2.0.192.in-addr.arpa", "192.0.2.1")  # the name exists but has no PTR
    # RFC 2317 classless delegation: the PTR sits behind a CNAME.
    z.add_cname("3.2.0.192.in-addr.arpa", "3.0-25.2.0.192.in-addr.arpa")
    z.add_zone_line("3.0-25.2.0.192.in-addr.arpa. 300 IN PTR mail.classless.example.")
    out = {r.ip: r for r in resolve_many(["192.0.2.1", "192.0.2.3"], nameservers=[dns_server.nameserver()[0] + f":{dns_server.port}"], timeout=0.5)}
    assert out["192.0.2.1"].status == "nodata"
    assert out["192.0.2.3"].reverse_dns == "mail.classless.example"
    assert out["192.0.2.3"].fcrdns is False  # the name has no A record


def test_second_nameserver_answers_when_first_is_silent(dns_server) -> None:  # type: ignore[no-untyped-def]
    from tests.servers.dns import DNSServer

    dns_server.zone.add_host("mail.backup.example", HIT_V4)
    with DNSServer(mode="timeout") as dead:
        out = resolve_many([HIT_V4], nameservers=[f"127.0.0.1:{dead.port}", f"127.0.0.1:{dns_server.port}"],
                           timeout=1.0)
    assert out[0].status == "ok" and out[0].reverse_dns == "mail.backup.example"


def test_enrich_persists_and_retries_only_transient_failures(zone, ingest_specs) -> None:  # type: ignore[no-untyped-def]
    db = ingest_specs([report(0, [rec(ip, 5, spf=[("example.com", "pass")]) for ip in ALL_IPS])])
    ns = [f"{zone.host}:{zone.port}"]

    stats = enrich_db(db, nameservers=ns, timeout=0.4)
    assert stats.considered == len(ALL_IPS)
    assert stats.by_status == {"ok": 4, "nxdomain": 1, "timeout": 1, "servfail": 2}
    with duckdb.connect(str(db), read_only=True) as con:
        rows = {r[0]: r[1:] for r in con.execute(
            "SELECT ip, rdns_status, reverse_dns, base_domain, fcrdns, service_name, service_source, "
            "rdns_resolved_at IS NOT NULL FROM ip_info").fetchall()}
        assert rows[HIT_V4] == ("ok", "o1.ptr4242.sendgrid.net", "sendgrid.net", True,
                                "Twilio SendGrid", "rdns", True)
        assert rows[HIT_V6][:4] == ("ok", "mx1.example.net", "example.net", True)
        assert rows[HIT_V6][5] == "rdns_domain"  # not in the service map: the base domain names it
        assert rows[NX][:4] == ("nxdomain", None, None, None)
        assert rows[SLOW][0] == "timeout" and rows[BROKEN][0] == "servfail"
        assert rows[MISMATCH][3] is False
        # v_records shows the new columns for every record.
        got = con.execute("SELECT source_ip, fcrdns, rdns_status, reverse_dns FROM v_records "
                          "WHERE source_ip = ?", [HIT_V4]).fetchall()
        assert got == [(HIT_V4, True, "ok", "o1.ptr4242.sendgrid.net")]

    # Second run: only the transient failures are asked again; the server now answers them.
    zone.zone.set_behaviour(SLOW, "answer")
    zone.zone.add_host("recovered.example.org", SLOW)
    before = len(zone.queries)
    stats = enrich_db(db, nameservers=ns, timeout=0.4)
    assert stats.considered == 3  # SLOW, BROKEN, REFUSED
    ptr_asked = {n for n, t, _ in zone.queries[before:] if t == "PTR"}
    assert len(ptr_asked) == 3
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT rdns_status, reverse_dns FROM ip_info WHERE ip = ?", [SLOW]).fetchone() == (
            "ok", "recovered.example.org")

    # A transient failure later does not erase what an earlier run found.
    zone.zone.set_behaviour(HIT_V4, "timeout")
    enrich_db(db, nameservers=ns, timeout=0.4, refresh_days=0)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT rdns_status, reverse_dns, service_source FROM ip_info WHERE ip = ?",
                           [HIT_V4]).fetchone() == ("timeout", "o1.ptr4242.sendgrid.net", "rdns")


def test_service_attribution_order() -> None:
    assert service_for("sendgrid.net", None, None).source == "rdns"
    assert service_for("unknown-host.example", "sendgrid.com", "SendGrid, Inc.").source == "as_domain"
    assert service_for("unknown-host.example", None, "Some ISP").name == "unknown-host.example"
    assert service_for(None, None, "Some ISP").source == "as_name"
    assert service_for(None, None, None).name is None


def test_nameserver_and_config_parsing() -> None:
    assert parse_nameserver("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:5300") == ("::1", 5300)
    assert parse_nameserver("2001:db8::53") == ("2001:db8::53", 53)
    with pytest.raises(ValueError):
        parse_nameserver("dns.example.com")
    opts = EnrichOptions.resolve({"enrich": {"nameservers": ["127.0.0.1:5353"], "timeout": 0.5}}, concurrency=8)
    assert (opts.nameservers, opts.timeout, opts.concurrency) == (("127.0.0.1:5353",), 0.5, 8)
    assert EnrichOptions.resolve({"enrich": {"timeout": 3}}, timeout=1.0).timeout == 1.0
    with pytest.raises(ConfigError):
        EnrichOptions.resolve({"enrich": {"nameserver": "x"}})


def test_dns_runs_with_the_database_closed(dns_server, ingest_specs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """While `dmarclens enrich` waits on DNS, another process can open the file for writing."""
    db = ingest_specs([report(0, [rec(HIT_V4, 5, spf=[("example.com", "pass")])])])
    dns_server.zone.add_host("o1.ptr4242.sendgrid.net", HIT_V4)
    dns_server.zone.set_delay(HIT_V4, 3.0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmarclens", "enrich", "--db", str(db),
         "--nameserver", f"127.0.0.1:{dns_server.port}", "--timeout", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(t == "PTR" for _, t, _ in dns_server.queries):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "enrich never asked DNS"
            time.sleep(0.02)
        # The PTR answer is held back for 3 s: enrich is mid-DNS now. A writer must get in at once.
        con = duckdb.connect(str(db))
        con.execute("CREATE TABLE probe AS SELECT 1 AS x")
        con.close()
        assert proc.poll() is None  # still waiting on DNS, so the open above did not race its end
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT rdns_status FROM ip_info WHERE ip = ?", [HIT_V4]).fetchone() == ("ok",)


def test_truncated_reply_falls_back_to_tcp(dns_server) -> None:  # type: ignore[no-untyped-def]
    ip = "192.0.2.90"
    for i in range(40):  # ~2.5 kB of PTR names: more than the 1232-byte EDNS payload
        dns_server.zone.add_ptr(ip, f"host{i:02d}-{'x' * 40}.many.example")
    (out,) = resolve_many([ip], nameservers=[f"127.0.0.1:{dns_server.port}"], timeout=2.0)
    assert out.status == "ok" and out.reverse_dns is not None and out.reverse_dns.endswith(".many.example")
    assert any(t == "PTR" and proto == "tcp" for _, t, proto in dns_server.queries)


def _reply(qid: int, qname: str, answers: list[tuple[str, str, str]], *, rcode: int = 0) -> bytes:
    from dnslib import QTYPE, RR, DNSRecord

    q = DNSRecord.question(qname, "PTR")
    q.header.id = qid
    r = q.reply()
    r.header.rcode = rcode
    for owner, rtype, rdata in answers:
        r.add_answer(*RR.fromZone(f"{owner} 60 IN {rtype} {rdata}"))
    assert QTYPE.PTR == 12
    return r.pack()


def test_wire_parser_checks_id_question_and_bounds() -> None:
    from dmarclens.enrich.rdns import pack_query, parse_reply, read_name

    name = "10.2.0.192.in-addr.arpa"
    good = _reply(7, name, [(name + ".", "PTR", "Mail.Example.COM."), (name + ".", "PTR", "b.example.com.")])
    reply = parse_reply(good, 7, name, 12)
    assert reply is not None and reply.values == ["mail.example.com", "b.example.com"]
    assert (reply.rcode, reply.truncated) == (0, False)
    assert parse_reply(good, 8, name, 12) is None  # another query's ID
    assert parse_reply(good, 7, "11.2.0.192.in-addr.arpa", 12) is None  # another question
    assert parse_reply(good, 7, name, 1) is None  # another type
    assert parse_reply(pack_query(7, name, 12), 7, name, 12) is None  # a query, not a reply
    assert parse_reply(good[:5], 7, name, 12) is None
    with pytest.raises(ValueError):
        parse_reply(good[:-3], 7, name, 12)  # the last record is cut short
    nx = parse_reply(_reply(9, name, [], rcode=3), 9, name, 12)
    assert nx is not None and (nx.rcode, nx.values) == (3, [])
    # Compression pointers: one that points at itself must not loop forever.
    with pytest.raises(ValueError):
        read_name(b"\x00" * 12 + b"\xc0\x0c", 12)
    assert read_name(b"\x00" * 12 + b"\x01a\x00" + b"\x01b\xc0\x0c", 15) == ("b.a", 19)
    assert read_name(b"\x03a.b\x00", 0) == ("a\\046b", 5)  # a dot inside a label is escaped
