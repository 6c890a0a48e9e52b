"""Send new, unacknowledged anomalies: stdout JSON lines, a webhook, an SMTP digest.

Why each alert goes out once: an owner who gets the same "new range in
Microsoft 365" mail every hour stops reading them. Every delivery attempt is
written to ``alert_log``; an anomaly is pending for a channel until that
channel accepted it, and is sent again only if its severity later *rises*
(a slow ramp that turns critical deserves a second message). Failed sends
stay pending and are retried on the next run.

The database is never held open while talking to a server: pending anomalies
are read, the connection closed, the sends made, and the log written in a
second short transaction.
"""

from __future__ import annotations

import html
import json
import logging
import os
import smtplib
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from dmarclens.core.errors import ConfigError
from dmarclens.detect.model import RANK, SEVERITIES, Anomaly
from dmarclens.store import db as dbmod

log = logging.getLogger(__name__)

SEVERITY_COLOR = {"critical": "#8b0000", "high": "#d9480f", "medium": "#e8a000", "low": "#4a7ab5", "info": "#777777"}
TEAMS_COLOR = {"critical": "Attention", "high": "Attention", "medium": "Warning", "low": "Accent", "info": "Default"}


@dataclass
class AlertSettings:
    """Where alerts go. CLI flag > environment > [alerts] in dmarclens.toml > default."""

    min_severity: str = "medium"
    stdout: bool = True
    webhook_url: str | None = None
    webhook_format: str = "auto"  # auto | slack | teams
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_security: str = "none"  # none | starttls | ssl
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    mail_from: str | None = None
    mail_to: list[str] = field(default_factory=list)
    timeout: float = 15.0
    ca_file: str | None = None  # extra CA bundle for STARTTLS/SSL (self-hosted relays)
    dashboard_url: str | None = None  # linked from messages when set

    def channels(self) -> list[str]:
        out = ["stdout"] if self.stdout else []
        if self.webhook_url:
            out.append("webhook")
        if self.smtp_host and self.mail_to:
            out.append("smtp")
        return out


def settings_from_config(raw: dict[str, Any], **overrides: Any) -> AlertSettings:
    """Build AlertSettings from the ``[alerts]`` table, the environment and CLI overrides (None = unset).

    Secrets come only from the environment or a file: ``DMARCLENS_SMTP_PASSWORD``
    or ``smtp_password_file``; the webhook URL (which embeds a token for Slack
    and Teams) also from ``DMARCLENS_WEBHOOK_URL``.
    """
    cfg = dict(raw.get("alerts", {}) or {})
    s = AlertSettings()
    env = os.environ
    values: dict[str, Any] = {
        "min_severity": cfg.get("min_severity"),
        "webhook_url": env.get("DMARCLENS_WEBHOOK_URL") or cfg.get("webhook_url"),
        "webhook_format": cfg.get("webhook_format"),
        "smtp_host": cfg.get("smtp_host"),
        "smtp_port": cfg.get("smtp_port"),
        "smtp_security": cfg.get("smtp_security"),
        "smtp_user": cfg.get("smtp_user"),
        "mail_from": cfg.get("mail_from"),
        "mail_to": cfg.get("mail_to"),
        "timeout": cfg.get("timeout"),
        "ca_file": cfg.get("ca_file"),
        "dashboard_url": cfg.get("dashboard_url"),
        "stdout": cfg.get("stdout"),
    }
    values.update({k: v for k, v in overrides.items() if v not in (None, (), [])})
    for key, value in values.items():
        if value is None:
            continue
        if key == "mail_to" and isinstance(value, str):
            value = [a.strip() for a in value.split(",") if a.strip()]
        if key == "mail_to":
            value = list(value)
        setattr(s, key, value)
    password = env.get("DMARCLENS_SMTP_PASSWORD")
    pw_file = cfg.get("smtp_password_file")
    if not password and pw_file:
        try:
            password = Path(pw_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"alerts.smtp_password_file {pw_file}: {e.strerror}") from e
    s.smtp_password = password or None
    if s.min_severity not in RANK:
        raise ConfigError(f"min severity {s.min_severity!r}: use one of {', '.join(SEVERITIES)}")
    if s.smtp_security not in ("none", "starttls", "ssl"):
        raise ConfigError(f"smtp security {s.smtp_security!r}: use none, starttls or ssl")
    if s.webhook_format not in ("auto", "slack", "teams"):
        raise ConfigError(f"webhook format {s.webhook_format!r}: use auto, slack or teams")
    if s.smtp_host and s.mail_to and not s.mail_from:
        raise ConfigError("alerts by mail need a sender: --mail-from or alerts.mail_from")
    if values.get("smtp_port") is None:
        s.smtp_port = {"ssl": 465, "starttls": 587}.get(s.smtp_security, 25)
    s.smtp_port = int(s.smtp_port)
    return s


@dataclass
class AlertResult:
    """What one ``dmarclens alert`` run did, per channel."""

    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------- selection


def pending(con: Any, channel: str, *, min_severity: str, since: date | None) -> list[Anomaly]:
    """Open anomalies at/above a severity not yet accepted by ``channel`` at their current severity."""
    from dmarclens.detect.run import load_anomalies

    rows = con.execute(
        """SELECT a.anomaly_id FROM v_anomalies a
           WHERE a.status = 'open' AND a.severity_rank >= ? AND (?::DATE IS NULL OR a.last_day >= ?::DATE)
             AND NOT EXISTS (SELECT 1 FROM alert_log l WHERE l.anomaly_id = a.anomaly_id AND l.channel = ?
                             AND l.ok AND l.severity_rank >= a.severity_rank)""",
        [RANK[min_severity], since, since, channel],
    ).fetchall()
    ids = [r[0] for r in rows]
    return load_anomalies(con, ids=ids) if ids else []


def default_since(con: Any, days: int = 14) -> date | None:
    """Without --since, alert on anomalies that reach into the last ``days`` days of data.

    Relative to the newest stored day, not the wall clock, so a first run on a
    year of history does not send a year of findings.
    """
    row = con.execute("SELECT max(day) FROM records").fetchone()
    return (row[0] - timedelta(days=days)) if row and row[0] else None


# --------------------------------------------------------------------------- rendering


def title(a: Anomaly) -> str:
    label = a.kind.replace("_", " ")
    return f"[{a.severity.upper()}] {label} for {a.domain}"


def _facts(a: Anomaly) -> list[tuple[str, str]]:
    days = a.first_day.isoformat() if a.first_day == a.last_day else f"{a.first_day} to {a.last_day}"
    ident = ", ".join(f"{k}={v}" for k, v in a.identity.items())
    facts = [("Days", days), ("Identity", ident or "-"), ("Messages", f"{a.messages:,} (expected {a.expected:,.0f})"),
             ("DMARC", a.dmarc), ("Reporters", ", ".join(a.reporters[:8]) or "-"),
             ("IPs", ", ".join(a.ips[:5]) + (" ..." if len(a.ips) > 5 else "") or "-"), ("Id", a.id)]
    return facts


def slack_payload(a: Anomaly, dashboard_url: str | None = None) -> dict[str, Any]:
    """Slack incoming-webhook JSON (also accepted by Mattermost, Rocket.Chat and Teams' legacy connectors)."""
    facts = " | ".join(f"*{k}:* {v}" for k, v in _facts(a))
    text = f"{title(a)}: {a.explanation}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title(a)[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": a.explanation[:2900]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": facts[:2900]}]},
    ]
    if dashboard_url:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{dashboard_url}|Open the dashboard>"}})
    return {"text": text, "blocks": blocks, "attachments": [{"color": SEVERITY_COLOR[a.severity], "fallback": text}]}


def teams_payload(a: Anomaly, dashboard_url: str | None = None) -> dict[str, Any]:
    """Microsoft Teams (Workflows / Power Automate) webhook JSON: a message with an Adaptive Card."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title(a), "weight": "Bolder", "size": "Medium", "wrap": True,
         "color": TEAMS_COLOR[a.severity]},
        {"type": "TextBlock", "text": a.explanation, "wrap": True},
        {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(a)]},
    ]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard", "version": "1.4", "body": body,
    }
    if dashboard_url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the dashboard", "url": dashboard_url}]
    return {
        "type": "message",
        "summary": title(a),
        "text": f"{title(a)}: {a.explanation}",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
                         "content": card}],
    }


def webhook_kind(url: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith("webhook.office.com") or host.endswith("logic.azure.com") or "powerautomate" in host \
            or "powerplatform" in host:
        return "teams"
    return "slack"


def digest(anomalies: list[Anomaly], dashboard_url: str | None = None) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of one digest mail."""
    counts = Counter(a.severity for a in anomalies)
    parts = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES) if counts[s])
    domains = sorted({a.domain for a in anomalies})
    subject = (f"[dmarclens] {len(anomalies)} new DMARC anomal{'y' if len(anomalies) == 1 else 'ies'} "
               f"({parts}) for {', '.join(domains[:3])}{' ...' if len(domains) > 3 else ''}")
    lines = [f"dmarclens found {len(anomalies)} new anomal{'y' if len(anomalies) == 1 else 'ies'} ({parts}).", ""]
    for a in anomalies:
        lines.append(title(a))
        lines.append(f"  {a.explanation}")
        for k, v in _facts(a):
            lines.append(f"  {k}: {v}")
        lines.append("")
    lines.append("Acknowledge a finding to stop repeats: dmarclens ack ID --note '...'")
    if dashboard_url:
        lines.append(f"Dashboard: {dashboard_url}")
    plain = "\n".join(lines) + "\n"
    rows = []
    for a in anomalies:
        facts = "".join(f"<tr><td style='color:#555;padding-right:8px'>{html.escape(k)}</td>"
                        f"<td>{html.escape(v)}</td></tr>" for k, v in _facts(a))
        rows.append(
            f"<div style='border-left:4px solid {SEVERITY_COLOR[a.severity]};padding:4px 12px;margin:12px 0'>"
            f"<h3 style='margin:4px 0'>{html.escape(title(a))}</h3>"
            f"<p>{html.escape(a.explanation)}</p><table style='font-size:90%'>{facts}</table></div>"
        )
    link = f"<p><a href='{html.escape(dashboard_url)}'>Open the dashboard</a></p>" if dashboard_url else ""
    body = (
        "<!doctype html><html><body style='font-family:sans-serif'>"
        f"<p>dmarclens found {len(anomalies)} new anomal{'y' if len(anomalies) == 1 else 'ies'} "
        f"({html.escape(parts)}).</p>{''.join(rows)}"
        "<p style='color:#555'>Acknowledge a finding to stop repeats: "
        "<code>dmarclens ack ID --note '...'</code></p>"
        f"{link}</body></html>"
    )
    return subject, plain, body


# --------------------------------------------------------------------------- sending


def post_webhook(url: str, payload: dict[str, Any], timeout: float, attempts: int = 2) -> None:
    """POST JSON; retry once on a 5xx or a network error. Raises OSError with a short reason."""
    data = json.dumps(payload).encode()
    last: Exception | None = None
    for attempt in range(attempts):
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "dmarclens"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL is the user's webhook
                resp.read()
                return
        except urllib.error.HTTPError as e:
            last = e
            if e.code < 500:
                raise OSError(f"webhook answered HTTP {e.code}") from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            last = e
        if attempt + 1 < attempts:
            time.sleep(0.5)
    reason = f"HTTP {last.code}" if isinstance(last, urllib.error.HTTPError) else str(
        getattr(last, "reason", last))
    raise OSError(f"webhook failed: {reason}")


def send_mail(s: AlertSettings, subject: str, plain: str, html_body: str) -> None:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = s.mail_from or ""
    msg["To"] = ", ".join(s.mail_to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=(s.mail_from or "dmarclens").rpartition("@")[2] or "dmarclens")
    msg.set_content(plain)
    msg.add_alternative(html_body, subtype="html")
    context = ssl.create_default_context(cafile=s.ca_file) if s.ca_file else ssl.create_default_context()
    host = s.smtp_host or "localhost"
    try:
        if s.smtp_security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, s.smtp_port, timeout=s.timeout, context=context)
        else:
            client = smtplib.SMTP(host, s.smtp_port, timeout=s.timeout)
        with client:
            if s.smtp_security == "starttls":
                client.starttls(context=context)
            if s.smtp_user:
                client.login(s.smtp_user, s.smtp_password or "")
            client.send_message(msg)
    except (smtplib.SMTPException, OSError) as e:
        raise OSError(f"mail to {host}:{s.smtp_port} failed: {e}") from e


def send_alerts(
    db_path: str | Path,
    settings: AlertSettings,
    *,
    since: date | None = None,
    out: TextIO | None = None,
    lock_timeout: float = 30.0,
) -> AlertResult:
    """Send every pending anomaly on every configured channel and log the sends."""
    out = out or sys.stdout
    result = AlertResult()
    channels = settings.channels()
    with dbmod.open_db(db_path, lock_timeout=lock_timeout) as con:
        if since is None:
            since = default_since(con)
        todo = {c: pending(con, c, min_severity=settings.min_severity, since=since) for c in channels}
    log_rows: list[tuple[str, str, str | None, int, bool, str | None]] = []
    seen: dict[str, Anomaly] = {}
    for channel, items in todo.items():
        for a in items:
            seen.setdefault(a.id, a)
        if not items:
            continue
        if channel == "stdout":
            for a in items:
                out.write(json.dumps(a.to_json(), sort_keys=False) + "\n")
            out.flush()
            log_rows += [(a.id, "stdout", None, a.severity_rank, True, None) for a in items]
            result.sent["stdout"] = len(items)
        elif channel == "webhook":
            url = settings.webhook_url or ""
            kind = webhook_kind(url, settings.webhook_format)
            target = f"{kind}:{urlsplit(url).hostname}"
            ok = 0
            for a in items:
                payload = (teams_payload if kind == "teams" else slack_payload)(a, settings.dashboard_url)
                try:
                    post_webhook(url, payload, settings.timeout)
                    log_rows.append((a.id, "webhook", target, a.severity_rank, True, None))
                    ok += 1
                except OSError as e:
                    log_rows.append((a.id, "webhook", target, a.severity_rank, False, str(e)))
                    result.failed["webhook"] = str(e)
                    log.error("alert %s to webhook %s: %s", a.id, target, e)
            result.sent["webhook"] = ok
        elif channel == "smtp":
            subject, plain, body = digest(items, settings.dashboard_url)
            target = ",".join(settings.mail_to)
            try:
                send_mail(settings, subject, plain, body)
                log_rows += [(a.id, "smtp", target, a.severity_rank, True, None) for a in items]
                result.sent["smtp"] = len(items)
            except OSError as e:
                log_rows += [(a.id, "smtp", target, a.severity_rank, False, str(e)) for a in items]
                result.failed["smtp"] = str(e)
                log.error("alert digest by mail: %s", e)
    result.anomalies = list(seen.values())
    if log_rows:
        from dmarclens.store.write import now_utc

        stamp = now_utc()
        with dbmod.open_db(db_path, lock_timeout=lock_timeout) as con, dbmod.transaction(con):
            con.executemany(
                "INSERT INTO alert_log (anomaly_id, channel, target, severity_rank, sent_at, ok, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [[aid, ch, tgt, rank, stamp, ok, err] for aid, ch, tgt, rank, ok, err in log_rows],
            )
    return result
