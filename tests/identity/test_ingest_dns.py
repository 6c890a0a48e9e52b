"""Ingest never waits on DNS: with --enrich and DNS unreachable every report is still stored."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from tests.identity.conftest import rec, report, write_reports
from tests.servers.ports import free_udp_tcp_port

IPS = ["192.0.2.10", "198.51.100.20", "2001:db8::30"]


def _reports(tmp_path: Path) -> Path:
    specs = [report(d, [rec(ip, 5 + d, spf=[("example.com", "pass")]) for ip in IPS] +
                    [rec("203.0.113.9", 2, spf=[("example.com", "fail")])])
             for d in range(9)]
    return write_reports(tmp_path / "in", specs)


def _config(tmp_path: Path, nameserver: str) -> Path:
    cfg = tmp_path / "dmarclens.toml"
    cfg.write_text(f'[enrich]\nnameservers = ["{nameserver}"]\ntimeout = 0.3\n')
    return cfg


def test_ingest_enrich_with_dns_silent_stores_everything(dns_server, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dns_server.mode = "timeout"  # the server swallows every query
    folder, db = _reports(tmp_path), tmp_path / "r.duckdb"
    res = cli("ingest", str(folder), "--db", str(db), "--json", "--enrich",
              "--config", str(_config(tmp_path, f"127.0.0.1:{dns_server.port}")))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["stored"] == 9
    assert "enrich:" in res.stderr and "4 timeout" in res.stderr
    assert any(t == "PTR" for _, t, _ in dns_server.queries)  # it really tried
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM reports").fetchone() == (9,)
        statuses = con.execute("SELECT DISTINCT rdns_status FROM ip_info").fetchall()
        assert statuses == [("timeout",)]
        # Classification does not need DNS: it ran anyway.
        assert con.execute("SELECT count(*) FROM records WHERE traffic_class IS NULL").fetchone() == (0,)
        # Failures are "unknown" in the first week (too little history), "spoofed" after it.
        assert set(con.execute("SELECT DISTINCT traffic_class FROM records WHERE NOT dmarc_pass").fetchall()) == {
            ("unknown",), ("spoofed",)}


def test_ingest_enrich_with_nothing_listening(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_udp_tcp_port()  # nobody listens there: the kernel refuses every packet
    folder, db = _reports(tmp_path), tmp_path / "r.duckdb"
    res = cli("ingest", str(folder), "--db", str(db), "--enrich",
              "--config", str(_config(tmp_path, f"127.0.0.1:{port}")))
    assert res.returncode == 0, res.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM reports").fetchone() == (9,)
        assert con.execute("SELECT count(*) FROM ip_info WHERE rdns_status IN ('timeout', 'error')").fetchone() == (4,)


def test_plain_ingest_sends_no_dns(dns_server, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, db = _reports(tmp_path), tmp_path / "r.duckdb"
    res = cli("ingest", str(folder), "--db", str(db),
              "--config", str(_config(tmp_path, f"127.0.0.1:{dns_server.port}")))
    assert res.returncode == 0, res.stderr
    assert dns_server.queries == []
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ip_info WHERE rdns_status IS NULL").fetchone() == (4,)
