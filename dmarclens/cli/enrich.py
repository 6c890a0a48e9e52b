"""`dmarclens enrich` and `dmarclens posture`: the click layer over
``dmarclens.enrich.rdns`` / ``classify`` / ``posture``.

Only argument handling and output live here. Both commands do their DNS with
no database connection open, so a dashboard or a cron ingest can use the file
meanwhile.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from dmarclens.cli.common import config_option, db_option, fail, run_guarded
from dmarclens.core.errors import DmarcLensError
from dmarclens.enrich.rdns import DEFAULT_CONCURRENCY, DEFAULT_REFRESH_DAYS, DEFAULT_TIMEOUT, parse_nameserver

if TYPE_CHECKING:
    from dmarclens.core.config import Settings


def _check_nameservers(values: tuple[str, ...]) -> tuple[str, ...]:
    for ns in values:
        try:
            parse_nameserver(ns)
        except ValueError as e:
            raise click.BadParameter(f"{ns!r}: {e} (give IP or IP:PORT)", param_hint="--nameserver") from e
    return values


nameserver_option = click.option(
    "--nameserver", "nameservers", multiple=True, metavar="IP[:PORT]",
    help="DNS server to ask (repeat for several; default: [enrich] nameservers, else the system's resolvers).",
)
timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0.05), default=None,
    help=f"Seconds each DNS lookup may take (default: [enrich] timeout, else {DEFAULT_TIMEOUT:g}).",
)


@click.command()
@db_option
@config_option
@nameserver_option
@timeout_option
@click.option("--concurrency", type=click.IntRange(min=1, max=4096), default=None,
              help=f"Lookups in flight at once (default: [enrich] concurrency, else {DEFAULT_CONCURRENCY}).")
@click.option("--refresh-days", type=click.FloatRange(min=0), default=None,
              help="Look an IP up again when its last answer is older than this "
                   f"(default: [enrich] refresh_days, else {DEFAULT_REFRESH_DAYS}).")
@click.option("--no-dns", "no_dns", is_flag=True,
              help="Skip reverse DNS; only refresh traffic classes and lookalikes.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
def enrich(db: str | None, config: str | None, nameservers: tuple[str, ...], timeout: float | None,
           concurrency: int | None, refresh_days: float | None, no_dns: bool, as_json: bool) -> None:
    """Resolve reverse DNS of source IPs, then classify traffic and flag lookalikes.

    Looks up the PTR name of every IP never resolved, resolved with a
    temporary failure (timeout, SERVFAIL), or older than --refresh-days;
    checks that the name resolves back to the IP (FCrDNS); derives the base
    domain and the sending service. Then recomputes each record's traffic
    class (authorized, forwarded, misconfigured, spoofed, unknown; rules and
    [identity] config overrides in docs/identity.md) and the lookalike
    identifiers table. DNS runs with the database closed.

    \b
    Example:
      dmarclens enrich --db reports.duckdb
      dmarclens enrich --nameserver 127.0.0.1:5353 --timeout 1 --concurrency 512
      dmarclens enrich --no-dns      # after editing [[identity.overrides]]
    """
    from dmarclens.core.config import load_settings
    from dmarclens.enrich.rdns import EnrichOptions, enrich_db

    _check_nameservers(nameservers)
    settings = run_guarded(load_settings, config=config, db=db)
    opts = run_guarded(EnrichOptions.resolve, settings.raw, nameservers=nameservers, timeout=timeout,
                       concurrency=concurrency, refresh_days=refresh_days)
    if not settings.db.exists():
        fail(f"database {settings.db}: not found (run `dmarclens ingest PATH --db {settings.db}` first)")
    stats = run_guarded(
        enrich_db, settings.db, nameservers=opts.nameservers, timeout=opts.timeout,
        concurrency=opts.concurrency, refresh_days=opts.refresh_days, lock_timeout=settings.lock_timeout,
        settings_raw=settings.raw, owned_domains=settings.domains, resolve=not no_dns,
    )
    if as_json:
        click.echo(json.dumps({
            "ips_considered": stats.considered, "resolved": stats.resolved, "by_status": stats.by_status,
            "records_reclassified": stats.classified, "lookalikes": stats.lookalikes,
            "seconds": round(stats.seconds, 3),
        }, indent=2))
        return
    click.echo(_summary_line(stats) + f" → {settings.db}", err=True)


def _summary_line(stats: object) -> str:
    by_status: dict[str, int] = getattr(stats, "by_status", {})
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "none pending"
    return (
        f"{getattr(stats, 'resolved', 0)} IPs looked up ({statuses}); "
        f"{getattr(stats, 'classified', 0)} records reclassified; "
        f"{getattr(stats, 'lookalikes', 0)} lookalike identifiers; {getattr(stats, 'seconds', 0.0):.1f}s"
    )


def enrich_after_ingest(settings: Settings) -> bool:
    """``dmarclens ingest --enrich``: runs after the ingest committed, with [enrich] settings.

    Never raises and never changes the ingest's exit code: the reports are
    already stored, and DNS trouble (unreachable, timeouts) only means the
    IPs are looked up again next time. Returns False when enrichment failed.
    """
    from dmarclens.enrich.rdns import EnrichOptions, enrich_db

    try:
        opts = EnrichOptions.resolve(settings.raw)
        stats = enrich_db(
            settings.db, nameservers=opts.nameservers, timeout=opts.timeout, concurrency=opts.concurrency,
            refresh_days=opts.refresh_days, lock_timeout=settings.lock_timeout, settings_raw=settings.raw,
            owned_domains=settings.domains,
        )
    except DmarcLensError as e:
        click.echo(f"dmarclens: warning: enrichment skipped (reports are stored): {e}", err=True)
        return False
    click.echo("enrich: " + _summary_line(stats), err=True)
    return True


@click.command()
@click.argument("domains", nargs=-1)
@db_option
@config_option
@nameserver_option
@timeout_option
@click.option("--unused-days", type=click.IntRange(min=1), default=30, show_default=True,
              help="An SPF include counts as unused when no report shows mail passing SPF through it "
                   "in this many days before the newest report.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def posture(domains: tuple[str, ...], db: str | None, config: str | None, nameservers: tuple[str, ...],
            timeout: float, unused_days: int, fmt: str) -> None:
    """Check the live DMARC, SPF and DKIM records of your domains.

    Reports DMARC policy strength (p, sp, np, pct, rua), SPF lookup count and
    +all/?all, SPF includes that authorize shared platforms (Microsoft 365,
    Google, SendGrid, Mailgun, Amazon SES, Mailchimp ...) where any of their
    customers passes SPF as you, whether the reports show each in real use,
    and the DKIM keys of selectors the reports show. DOMAINS default to the
    configured domains, else every domain in the reports. Results are stored
    with a timestamp (posture_checks) for the dashboard. Exit 1 when DNS
    answered for none of the domains.

    \b
    Example:
      dmarclens posture example.com --db reports.duckdb
      dmarclens posture --format json --nameserver 9.9.9.9
    """
    from dmarclens.core.config import load_settings
    from dmarclens.enrich.posture import posture_db
    from dmarclens.enrich.rdns import EnrichOptions

    _check_nameservers(nameservers)
    settings = run_guarded(load_settings, config=config, db=db)
    opts = run_guarded(EnrichOptions.resolve, settings.raw, nameservers=nameservers, timeout=timeout)
    results = run_guarded(
        posture_db, settings.db, domains, configured=settings.domains, nameservers=opts.nameservers,
        timeout=opts.timeout, unused_days=unused_days, lock_timeout=settings.lock_timeout,
    )
    if not results:
        fail("no domains to check: name them, set `domains` in the config, or ingest reports first", 2)
    from dmarclens.enrich.posture import dns_failed

    all_failed = all(dns_failed(p) for p in results)
    if fmt == "json":
        click.echo(json.dumps([p.to_json() for p in results], indent=2))
        if all_failed:
            fail("DNS answered for none of the domains (see --nameserver, --timeout)")
        return
    from dmarclens.query.output import to_table

    rows = []
    for p in results:
        d, s = p.dmarc, p.spf
        shared = sorted({i.platform for i in s.includes if i.multi_tenant and i.platform})
        unused = sorted({i.platform for i in s.includes if i.multi_tenant and i.unused and i.platform})
        rows.append([
            p.domain, d.strength, d.p, d.sp, d.np, d.pct, "yes" if d.rua else "no",
            s.status, s.lookups if s.record else None, s.all, ", ".join(shared), ", ".join(unused),
            len([k for k in p.dkim if k.status == "ok"]), len(p.dkim),
        ])
    click.echo(to_table(
        ["domain", "dmarc", "p", "sp", "np", "pct", "rua", "spf", "lookups", "all", "shared platforms",
         "unused", "dkim ok", "selectors"],
        rows,
    ))
    for p in results:
        if p.findings:
            click.echo(f"\n{p.domain}:")
            for line in p.findings:
                click.echo(f"  - {line}")
    sys.stdout.flush()
    if all_failed:
        fail("DNS answered for none of the domains (see --nameserver, --timeout)")
