"""`dmarclens detect`, `dmarclens ack`, `dmarclens alert`: the click layer over
``dmarclens.detect.run`` and ``dmarclens.detect.alerts``.

Only argument handling and output live here; pandas and the detector load
inside the commands, so listing commands stays fast.
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import click

from dmarclens.cli.common import EXIT_FAILED, config_option, db_option, fail, run_guarded

if TYPE_CHECKING:
    from dmarclens.detect.model import Anomaly

SEVERITY_CHOICE = click.Choice(["info", "low", "medium", "high", "critical"])


def _day(ctx: click.Context, param: click.Parameter, value: datetime | None) -> date | None:
    return value.date() if value else None


since_option = click.option(
    "--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, callback=_day,
    help="First report day to judge (YYYY-MM-DD).",
)
until_option = click.option(
    "--until", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, callback=_day,
    help="Last report day to judge (YYYY-MM-DD; default: newest data).",
)


def render_table(anomalies: list[Anomaly]) -> str:
    """Readable text: one summary line per anomaly, then its identity and explanation."""
    if not anomalies:
        return "no anomalies\n"
    lines = []
    for a in anomalies:
        days = a.first_day.isoformat() if a.first_day == a.last_day else f"{a.first_day}..{a.last_day}"
        ack = "  [acknowledged]" if a.status == "acknowledged" else ""
        lines.append(
            f"{a.severity.upper():<8} {a.kind:<37} {a.domain:<24} {days:<22} "
            f"{a.messages:>9,} msgs (expected {a.expected:,.0f})  dmarc {a.dmarc:<5} id {a.id}{ack}"
        )
        ident = " ".join(f"{k}={v}" for k, v in a.identity.items())
        lines.append(f"         identity: {ident}")
        lines.append(f"         {a.explanation}")
        lines.append("")
    counts: dict[str, int] = {}
    for a in anomalies:
        counts[a.severity] = counts.get(a.severity, 0) + 1
    order = ["critical", "high", "medium", "low", "info"]
    lines.append(f"{len(anomalies)} anomalies: " + ", ".join(f"{counts[s]} {s}" for s in order if s in counts))
    return "\n".join(lines) + "\n"


@click.command()
@db_option
@config_option
@since_option
@until_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--senders", "senders", type=click.Path(dir_okay=False), default=None,
              help="Expected-sender contract (default: [detect] senders, else ./senders.toml if present).")
@click.option("--min-severity", type=SEVERITY_CHOICE, default="info", show_default=True,
              help="Print only anomalies at or above this severity (all are stored).")
@click.option("--include-acknowledged", is_flag=True, help="Also print anomalies already acknowledged.")
@click.option("--ignore-unverified", is_flag=True, default=None,
              help="Leave out reports whose mail did not authenticate as their reporter "
                   "([detect] ignore_unverified; docs/security.md).")
def detect(db: str | None, config: str | None, since: date | None, until: date | None, fmt: str,
           senders: str | None, min_severity: str, include_acknowledged: bool,
           ignore_unverified: bool | None) -> None:
    """Find anomalous sending sources and store them in the anomalies table.

    Judges every report day after a domain's first 14 days (or --since ..
    --until) against per-reporter, weekday-aware baselines: new sources, volume
    spikes, new IP ranges inside authorized providers, new DKIM keys and
    envelope-from domains on passing mail, audience shifts, authentication
    regressions, spoofing bursts, revived sources, lookalike identifiers and
    senders.toml violations. Re-running updates the stored anomalies instead of
    duplicating them. Kinds, thresholds and the contract format:
    docs/detection.md.

    \b
    Example:
      dmarclens detect --db reports.duckdb
      dmarclens detect --since 2026-10-01 --format json --min-severity medium
      dmarclens detect --senders senders.toml
      dmarclens detect --ignore-unverified
    """
    from dmarclens.core.config import load_settings
    from dmarclens.detect.model import RANK
    from dmarclens.detect.run import detect_and_store

    settings = run_guarded(load_settings, config=config, db=db)
    if not settings.db.exists():
        fail(f"database {settings.db}: not found (run `dmarclens ingest PATH --db {settings.db}` first)")
    detect_cfg = settings.raw.get("detect", {}) or {}
    contract = senders or detect_cfg.get("senders")
    params = None
    if ignore_unverified or (ignore_unverified is None and detect_cfg.get("ignore_unverified")):
        from dmarclens.detect.features import Params

        params = Params(ignore_unverified=True)
    found = run_guarded(detect_and_store, settings.db, since, until, contract_path=contract,
                        lock_timeout=settings.lock_timeout, params=params)
    shown = [a for a in found if a.severity_rank >= RANK[min_severity]
             and (include_acknowledged or a.status != "acknowledged")]
    if fmt == "json":
        click.echo(json.dumps([a.to_json() for a in shown], indent=2))
    else:
        click.echo(render_table(shown), nl=False)
    new = sum(1 for a in found if a.new)
    click.echo(f"dmarclens: {len(found)} anomalies ({new} new) stored in {settings.db}", err=True)


@click.command()
@click.argument("ids", nargs=-1, required=True)
@db_option
@config_option
@click.option("--note", default=None, help="Why it is fine, for the record (e.g. 'new ESP, onboarded by marketing').")
def ack(ids: tuple[str, ...], db: str | None, config: str | None, note: str | None) -> None:
    """Acknowledge anomalies: they and their repeats are no longer alerted.

    A repeat is a later finding of the same kind for the same domain and
    identity; for volume-type kinds (spikes, bursts, regressions, revived
    sources) only repeats that are not more severe are suppressed. A unique
    prefix of the id is enough.

    \b
    Example:
      dmarclens ack 3f9c2a1b7d40e8aa --note "Mailchimp onboarded by marketing"
      dmarclens ack 3f9c 51d0
    """
    from dmarclens.core.config import load_settings
    from dmarclens.detect.run import load_anomalies
    from dmarclens.query.anomalies import acknowledge, id_prefix
    from dmarclens.store.db import connect

    settings = run_guarded(load_settings, config=config, db=db)
    if not settings.db.exists():
        fail(f"database {settings.db}: not found")
    for anomaly_id in ids:
        run_guarded(id_prefix, anomaly_id)  # a usage error before the database is opened
        con = run_guarded(connect, settings.db, lock_timeout=settings.lock_timeout)
        try:
            a = load_anomalies(con, ids=[run_guarded(acknowledge, con, anomaly_id, note=note)])[0]
        finally:
            con.close()
        click.echo(f"acknowledged {a.id}: {a.kind} for {a.domain} ({', '.join(f'{k}={v}' for k, v in a.identity.items())})")


@click.command()
@db_option
@config_option
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, callback=_day,
              help="Send anomalies whose last day is on or after this day (default: 14 days before the newest data).")
@click.option("--min-severity", type=SEVERITY_CHOICE, default=None,
              help="Send anomalies at or above this severity (default: [alerts] min_severity, else medium).")
@click.option("--detect/--no-detect", "run_detect", default=False, help="Run detection first.")
@click.option("--stdout/--no-stdout", "to_stdout", default=None,
              help="Print alerts as JSON lines on stdout (default: on).")
@click.option("--webhook", "webhook_url", default=None, metavar="URL",
              help="Slack or Teams incoming-webhook URL (default: $DMARCLENS_WEBHOOK_URL, [alerts] webhook_url).")
@click.option("--webhook-format", type=click.Choice(["auto", "slack", "teams"]), default=None,
              help="Payload shape (default auto: Teams for *.webhook.office.com / logic.azure.com, else Slack).")
@click.option("--smtp-host", default=None, help="Mail relay for the digest ([alerts] smtp_host).")
@click.option("--smtp-port", type=int, default=None, help="Relay port (default 25; 587 with starttls, 465 with ssl).")
@click.option("--smtp-security", type=click.Choice(["none", "starttls", "ssl"]), default=None,
              help="TLS to the relay (default none).")
@click.option("--smtp-user", default=None, help="SMTP login; the password comes from $DMARCLENS_SMTP_PASSWORD.")
@click.option("--mail-from", default=None, help="Sender address of the digest.")
@click.option("--mail-to", multiple=True, help="Recipient of the digest (repeat for several).")
@click.option("--senders", "senders", type=click.Path(dir_okay=False), default=None,
              help="Contract for --detect (default: [detect] senders, else ./senders.toml).")
def alert(db: str | None, config: str | None, since: date | None, min_severity: str | None, run_detect: bool,
          to_stdout: bool | None, webhook_url: str | None, webhook_format: str | None, smtp_host: str | None,
          smtp_port: int | None, smtp_security: str | None, smtp_user: str | None, mail_from: str | None,
          mail_to: tuple[str, ...], senders: str | None) -> None:
    """Send new, unacknowledged anomalies: JSON lines, a webhook, a mail digest.

    Each anomaly is sent once per channel (again only if its severity rises);
    sends are recorded in the alert_log table and failed ones are retried on
    the next run. Without --since, anomalies reaching into the last 14 days of
    data are considered. Exit 1 when a channel failed.

    \b
    Example:
      dmarclens alert --detect --min-severity high
      dmarclens alert --webhook https://hooks.slack.com/services/T000/B000/XXXX
      dmarclens alert --smtp-host mail.example.com --smtp-security starttls \\
          --smtp-user alerts --mail-from dmarclens@example.com --mail-to secops@example.com
    """
    from dmarclens.core.config import load_settings
    from dmarclens.detect.alerts import send_alerts, settings_from_config

    settings = run_guarded(load_settings, config=config, db=db)
    if not settings.db.exists():
        fail(f"database {settings.db}: not found")
    opts: dict[str, Any] = dict(
        min_severity=min_severity, stdout=to_stdout, webhook_url=webhook_url, webhook_format=webhook_format,
        smtp_host=smtp_host, smtp_port=smtp_port, smtp_security=smtp_security, smtp_user=smtp_user,
        mail_from=mail_from, mail_to=list(mail_to) or None,
    )
    alert_settings = run_guarded(settings_from_config, settings.raw, **opts)
    if run_detect:
        from dmarclens.detect.run import detect_and_store

        contract = senders or (settings.raw.get("detect", {}) or {}).get("senders")
        run_guarded(detect_and_store, settings.db, contract_path=contract, lock_timeout=settings.lock_timeout)
    result = run_guarded(send_alerts, settings.db, alert_settings, since=since, out=sys.stdout,
                         lock_timeout=settings.lock_timeout)
    summary = ", ".join(f"{n} via {c}" for c, n in result.sent.items()) or "nothing new to send"
    click.echo(f"dmarclens: alerts: {summary}", err=True)
    if not result.ok:
        for channel, reason in result.failed.items():
            click.echo(f"dmarclens: error: {channel}: {reason} (will retry on the next run)", err=True)
        sys.exit(EXIT_FAILED)
