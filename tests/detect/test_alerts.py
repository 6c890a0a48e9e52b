"""`dmarclens alert` against a real SMTP server (aiosmtpd) and a real HTTP webhook receiver."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from dmarclens.detect.model import RANK

from . import worlds
from .conftest import Detected

SINCE = worlds.day(14).isoformat()


def _alertable(detected: Detected) -> set[str]:
    return {a.id for a in detected.anomalies if RANK[a.severity] >= RANK["medium"]}


def test_webhook_smtp_and_stdout_each_alert_once(detected: Detected, cli_db, smtp_server, webhook_server,  # type: ignore[no-untyped-def]
                                                  world_copy: Path) -> None:
    want = _alertable(detected)
    args = ("alert", "--since", SINCE, "--webhook", f"{webhook_server.url}/hooks/T000/B000/XXXX",
            "--smtp-host", smtp_server.host, "--smtp-port", str(smtp_server.port),
            "--mail-from", "dmarclens@example.net", "--mail-to", "secops@example.net", "--mail-to", "cto@example.net")
    r = cli_db(*args)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert {x["id"] for x in lines} == want
    assert all(RANK[x["severity"]] >= RANK["medium"] for x in lines)

    requests = webhook_server.wait_for(len(want))
    assert len(requests) == len(want)
    bodies = [req.json for req in requests]
    assert all(req.header("Content-Type") == "application/json" for req in requests)
    assert all(b["text"] and b["blocks"] for b in bodies)  # Slack shape
    seed = next(a for a in detected.anomalies if a.domain == "seed.example")
    seed_body = next(b for b in bodies if seed.id in json.dumps(b))
    assert seed.explanation in json.dumps(seed_body) or seed.explanation[:80] in json.dumps(seed_body)

    (mail,) = smtp_server.wait_for(1)
    assert sorted(mail.rcpt_tos) == ["cto@example.net", "secops@example.net"]
    assert mail.message.get_content_type() == "multipart/alternative"
    plain = mail.message.get_body(preferencelist=("plain",)).get_content()
    html = mail.message.get_body(preferencelist=("html",)).get_content()
    assert all(aid in plain and aid in html for aid in want)
    assert "critical" in mail.subject and str(len(want)) in mail.subject
    assert "<h3" in html and seed.explanation.split(",")[0] in plain

    # second run: nothing is sent again on any channel
    again = cli_db(*args)
    assert again.returncode == 0 and again.stdout == ""
    assert "nothing new to send" in again.stderr
    assert len(webhook_server.requests) == len(want) and len(smtp_server.messages) == 1
    with duckdb.connect(str(world_copy), read_only=True) as con:
        sent = con.execute("SELECT channel, count(*), bool_and(ok) FROM alert_log GROUP BY 1 ORDER BY 1").fetchall()
    assert sent == [("smtp", len(want), True), ("stdout", len(want), True), ("webhook", len(want), True)]


def test_acknowledged_and_low_findings_are_not_sent(detected: Detected, cli_db) -> None:  # type: ignore[no-untyped-def]
    seed = next(a for a in detected.anomalies if a.domain == "seed.example")
    assert cli_db("ack", seed.id).returncode == 0
    r = cli_db("alert", "--since", SINCE, "--min-severity", "high")
    ids = {json.loads(x)["id"] for x in r.stdout.splitlines()}
    assert seed.id not in ids
    assert ids == {a.id for a in detected.anomalies if RANK[a.severity] >= RANK["high"]} - {seed.id}


def test_teams_payload_and_failed_send_is_retried(detected: Detected, cli_db, webhook_server,  # type: ignore[no-untyped-def]
                                                   world_copy: Path) -> None:
    want = _alertable(detected)
    webhook_server.status = 500
    url = f"{webhook_server.url}/workflows/abc"
    r = cli_db("alert", "--since", SINCE, "--no-stdout", "--webhook", url, "--webhook-format", "teams")
    assert r.returncode == 1 and "will retry" in r.stderr
    with duckdb.connect(str(world_copy), read_only=True) as con:
        failed = con.execute("SELECT count(*) FROM alert_log WHERE NOT ok AND channel = 'webhook'").fetchone()[0]
    assert failed == len(want)
    webhook_server.status = 200
    n_before = len(webhook_server.requests)
    r = cli_db("alert", "--since", SINCE, "--no-stdout", "--webhook", url, "--webhook-format", "teams")
    assert r.returncode == 0, r.stderr
    sent = webhook_server.requests[n_before:]
    assert len(sent) == len(want)
    card = sent[0].json["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard" and card["content"]["body"][0]["text"].startswith("[")


def test_severity_escalation_is_alerted_again_once(detected: Detected, cli_db, world_copy: Path) -> None:  # type: ignore[no-untyped-def]
    first = {json.loads(x)["id"] for x in cli_db("alert", "--since", SINCE).stdout.splitlines()}
    medium = next(a for a in detected.anomalies if a.severity == "medium" and a.id in first)
    with duckdb.connect(str(world_copy)) as con:
        con.execute("UPDATE anomalies SET severity = 'high', severity_rank = 3 WHERE anomaly_id = ?", [medium.id])
    second = [json.loads(x) for x in cli_db("alert", "--since", SINCE).stdout.splitlines()]
    assert [(x["id"], x["severity"]) for x in second] == [(medium.id, "high")]
    assert cli_db("alert", "--since", SINCE).stdout == ""


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_alert_settings_from_config_and_env(detected: Detected, world_copy: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                            smtp_server_factory) -> None:
    from tests.conftest import run_cli

    server = smtp_server_factory(users={"alerts": "s3cret"}, require_auth=True)
    cfg = tmp_path / "dmarclens.toml"
    cfg.write_text(
        f'db = "{world_copy}"\n[alerts]\nmin_severity = "critical"\nsmtp_host = "{server.host}"\n'
        f'smtp_port = {server.port}\nsmtp_user = "alerts"\nmail_from = "d@example.net"\nmail_to = ["o@example.net"]\n'
        "stdout = false\n"
    )
    r = run_cli("alert", "--config", str(cfg), "--since", SINCE, env={"DMARCLENS_SMTP_PASSWORD": "s3cret"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    (mail,) = server.wait_for(1)
    assert mail.auth_user == "alerts"
    crit = [a.id for a in detected.anomalies if a.severity == "critical"]
    assert crit and all(aid in mail.text() for aid in crit)
