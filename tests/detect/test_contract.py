"""senders.toml: passing mail outside the owner's list is flagged; what it allows is expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmarclens.core.errors import ConfigError
from dmarclens.detect.contract import load_contract, parse_contract

CONTRACT = """
[domains."newesp.example"]
services = ["Google"]
dkim = ["newesp.example:google"]

[domains."seed.example"]
services = ["Microsoft", "SendGrid"]
envelope_from = ["seed.example", "*.seed.example"]

[domains."burst.example"]
daily_messages = [50, 1200]

[domains."keyrot.example"]
dkim = ["keyrot.example:selector1", "keyrot.example:selector2"]
"""


def test_contract_violations_and_allowances(cli_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "senders.toml"
    path.write_text(CONTRACT)
    r = cli_db("detect", "--format", "json", "--senders", str(path), "--include-acknowledged")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    viol = [a for a in data if a["kind"] == "contract_violation"]
    by = {(a["domain"], json.dumps(a["identity"], sort_keys=True)) for a in viol}
    # SendGrid is not on newesp.example's list: flagged, and told once (no separate new_source)
    assert ("newesp.example", json.dumps({"service": "Twilio SendGrid"})) in by
    assert not [a for a in data if a["domain"] == "newesp.example" and a["kind"] == "new_source"]
    esp = next(a for a in viol if a["identity"] == {"service": "Twilio SendGrid"})
    assert esp["severity"] in ("medium", "high") and "senders.toml" in esp["explanation"]
    assert f"{esp['messages']:,}" in esp["explanation"]
    # its DKIM key is not listed either
    assert any(a["domain"] == "newesp.example" and a["identity"].get("dkim_selector") == "s1" for a in viol)
    # the seed's own Microsoft 365 is allowed: the new range is still reported, no violation for it
    assert not [a for a in viol if a["domain"] == "seed.example"]
    assert any(a["domain"] == "seed.example" and a["kind"] == "new_ip_range_in_authorized_provider"
               and a["severity"] in ("high", "critical") for a in data)
    # volume band: the SendGrid burst day exceeds 1,200 a day
    band = [a for a in viol if a["domain"] == "burst.example"]
    assert band and band[0]["identity"] == {"volume_band": "50-1200"}
    # a key rotation the contract lists is expected
    rot = [a for a in data if a["domain"] == "keyrot.example" and a["kind"] == "new_identifier"]
    assert rot and rot[0]["severity"] == "info"


def test_contract_parsing_rejects_mistakes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        parse_contract({"domains": {"a.example": {"servces": ["x"]}}})
    with pytest.raises(ConfigError, match=r"\[min, max\]"):
        parse_contract({"domains": {"a.example": {"daily_messages": [10]}}})
    with pytest.raises(ConfigError, match="not found"):
        load_contract(tmp_path / "missing.toml")
    c = parse_contract({"domains": {"A.Example": {"envelope_from": ["*.a.example"], "dkim": ["a.example"]}}})
    dc = c.for_domain("a.example")
    assert dc is not None
    assert dc.envelope_allowed("bounce.a.example") and dc.envelope_allowed("a.example")
    assert not dc.envelope_allowed("evil.example")
    assert dc.dkim_allowed("a.example", "anything") and not dc.dkim_allowed("b.example", "s1")
