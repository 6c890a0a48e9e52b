"""`dmarclens detect` as a user runs it: the JSON contract, the table, exit codes."""

from __future__ import annotations

import json
from datetime import date

from dmarclens.detect.model import KINDS, SEVERITIES

from . import worlds

REQUIRED = {"id", "kind", "severity", "domain", "first_day", "last_day", "identity", "ips", "messages",
            "expected", "dmarc", "explanation", "evidence"}
IDENTITY_KEYS = {"service", "asn", "base_domain", "ip_range", "envelope_from", "dkim_domain", "dkim_selector",
                 "header_from", "reporter", "envelope_to", "volume_band"}


def test_json_is_one_array_in_the_documented_shape(cli_db) -> None:  # type: ignore[no-untyped-def]
    r = cli_db("detect", "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data, list) and data
    for a in data:
        assert set(a) >= REQUIRED, set(a) ^ REQUIRED
        assert a["kind"] in KINDS and a["severity"] in SEVERITIES and a["dmarc"] in ("pass", "fail", "mixed")
        assert date.fromisoformat(a["first_day"]) <= date.fromisoformat(a["last_day"])
        assert isinstance(a["identity"], dict) and a["identity"] and set(a["identity"]) <= IDENTITY_KEYS
        assert isinstance(a["ips"], list) and isinstance(a["messages"], int) and isinstance(a["expected"], float)
        assert set(a["evidence"]) >= {"report_ids", "reporters"} and a["evidence"]["reporters"]
        assert len(a["id"]) == 16 and a["explanation"]
    assert len({a["id"] for a in data}) == len(data)
    ranks = [SEVERITIES.index(a["severity"]) for a in data]
    assert ranks == sorted(ranks, reverse=True)


def test_rerun_through_cli_prints_the_same_ids(cli_db) -> None:  # type: ignore[no-untyped-def]
    first = json.loads(cli_db("detect", "--format", "json").stdout)
    second = cli_db("detect", "--format", "json")
    assert {a["id"] for a in json.loads(second.stdout)} == {a["id"] for a in first}
    assert "(0 new)" in second.stderr


def test_since_until_and_min_severity_filter(cli_db) -> None:  # type: ignore[no-untyped-def]
    since, until = worlds.day(32).isoformat(), worlds.day(36).isoformat()
    r = cli_db("detect", "--format", "json", "--since", since, "--until", until, "--min-severity", "high")
    data = json.loads(r.stdout)
    assert data
    for a in data:
        assert SEVERITIES.index(a["severity"]) >= SEVERITIES.index("high")
        assert a["last_day"] >= since and a["first_day"] <= until
    assert any(a["domain"] == "seed.example" for a in data)


def test_table_output_shows_severity_identity_and_sentence(cli_db) -> None:  # type: ignore[no-untyped-def]
    r = cli_db("detect")
    assert r.returncode == 0
    assert "CRITICAL" in r.stdout and "ip_range=40.107.247.0/24" in r.stdout
    assert "anomalies:" in r.stdout.splitlines()[-1]


def test_bad_input_exit_codes(cli_db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import run_cli

    assert cli_db("detect", "--since", "yesterday").returncode == 2
    missing = run_cli("detect", "--db", str(tmp_path / "nope.duckdb"))
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad = tmp_path / "senders.toml"
    bad.write_text("[domains.'x.example']\nservices = 3\n")
    r = cli_db("detect", "--senders", str(bad))
    assert r.returncode == 2 and "services" in r.stderr


def test_help_has_example() -> None:
    from tests.conftest import run_cli

    for cmd in ("detect", "ack", "alert"):
        out = run_cli(cmd, "--help").stdout
        assert "Example:" in out, cmd
