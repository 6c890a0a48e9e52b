"""Labelled report-level worlds for the detection benchmark and tests.

Why here and not in the generator: the generator simulates one fixed sample
world; detection needs *many* situations, each with ground truth -- abuse
that must be found, and legitimate change (provider rotation, forwarding,
mailing lists, late, duplicate and multi-day reports) that must not raise an
alert. This module builds such worlds from the generator's own simulator
(``dmarclens.generator.build_world`` with custom domains, sources and
reporters) and its renderer, and adds what the simulator does not do:
delivery times (reports arrive hours to days after their period), duplicate
deliveries, reports re-sent under a new id, and multi-day merges.

Everything is deterministic (seeded ``random.Random`` per purpose).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from dmarclens.generator import DkimAuth, PolicySpec, RecordSpec, ReportSpec, render_report
from dmarclens.generator.world import (
    BUSINESS,
    GOOGLE_GROUPS_V4,
    GOOGLE_V4,
    M365_BASELINE_V4,
    MAILCHIMP_V4,
    SES_V4,
    SHOP,
    SPOOF_BURST_NETS,
    SPOOF_NETS,
    STEADY,
    DomainSpec,
    Reporter,
    Source,
    World,
    build_world,
    default_reporters,
)
from dmarclens.generator.wrappers import (
    FileKind,
    MailMeta,
    attachment_for,
    forward_email,
    report_email,
    report_file,
)

SENDGRID_V4 = ("167.89.54.131", "167.89.55.20", "149.72.160.17", "149.72.161.40")
FASTMAIL_V4 = ("103.168.172.150", "103.168.172.152", "103.168.172.157")
UNIVERSITY_V4 = ("134.76.10.46", "134.76.10.47")
HETZNER_V4 = ("94.130.13.77",)

# Receiver mixes of a B2B company, a non-profit and a web shop (fraction of the
# domain's mail each receiver sees), copied from the generator's reporters.
PROFILES = ("b2b", "nonprofit", "shop")
_PROFILE_SOURCE = {"b2b": "example.com", "nonprofit": "example.org", "shop": "shop.example.net"}


@dataclass(frozen=True)
class Scenario:
    """One labelled situation: where and when, and what the detector should (not) say.

    ``kinds`` are the anomaly kinds that count as finding it; an empty tuple
    means the situation is legitimate and must not raise an alert (any
    anomaly at or above ``medium`` on its domain during it is a false alert).
    """

    key: str
    title: str
    domain: str
    start: date
    end: date
    kinds: tuple[str, ...]
    max_delay: int = 1
    seed_case: bool = False

    @property
    def must_alert(self) -> bool:
        return bool(self.kinds)


@dataclass(frozen=True)
class Delivery:
    """One file as it lands in the rua mailbox: when, under which name, which bytes."""

    arrival: datetime
    name: str
    data: bytes
    note: str = ""


@dataclass
class ScenarioWorld:
    world: World
    scenarios: list[Scenario]
    deliveries: list[Delivery] = field(default_factory=list)
    eval_start: date | None = None

    @property
    def domains(self) -> list[str]:
        return [d.name for d in self.world.domains]

    def day(self, index: int) -> date:
        return self.world.day(index)

    def write_until(self, out_dir: Path, cutoff: datetime, after: datetime | None = None) -> list[Path]:
        """Write the files that arrived in (after, cutoff] into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for d in self.deliveries:
            if d.arrival <= cutoff and (after is None or d.arrival > after):
                path = out_dir / d.name
                path.write_bytes(d.data)
                written.append(path)
        return written


# --------------------------------------------------------------------------- cast helpers


def policy(domain: str, p: str = "reject") -> PolicySpec:
    return PolicySpec(domain, p=p, sp=p, pct=100)


def domain_spec(name: str, p: str = "reject", recipients: tuple[str, ...] = ("outlook.com", "contoso.example",
                                                                               "fabrikam.example")) -> DomainSpec:
    return DomainSpec(name, policy(name, p), recipients=recipients, description=name)


def reporters_for(profiles: dict[str, str], keys: Iterable[str] | None = None) -> tuple[Reporter, ...]:
    """The generator's receivers, with shares copied per domain from a profile (b2b, nonprofit, shop)."""
    wanted = set(keys) if keys is not None else None
    out = []
    for rep in default_reporters():
        if wanted is not None and rep.key not in wanted:
            continue
        base = dict(rep.shares)
        shares = tuple((dom, base.get(_PROFILE_SOURCE[prof], 0.0)) for dom, prof in profiles.items())
        shares = tuple((d, s) for d, s in shares if s > 0)
        if shares:
            out.append(replace(rep, shares=shares))
    return tuple(out)


def m365(domain: str, daily: float, *, label: str = "m365", nets: tuple[str, ...] = M365_BASELINE_V4,
         selector: str = "selector1", env: str | None = None, **kw: Any) -> Source:
    return Source(label, domain, "Microsoft 365", "aligned", daily, kw.pop("rhythm", BUSINESS),
                  ipv4=nets, ips_per_report=6, envelope_from=env or domain,
                  dkim=(DkimAuth(domain, selector),), as_domain="microsoft.com", v6_reporters=(), **kw)


def sendgrid(domain: str, daily: float, *, label: str = "sendgrid", **kw: Any) -> Source:
    return Source(label, domain, "SendGrid", "aligned", daily, kw.pop("rhythm", STEADY),
                  ipv4=SENDGRID_V4, ips_per_report=2, envelope_from=f"em4821.{domain}",
                  dkim=(DkimAuth(domain, "s1"), DkimAuth("sendgrid.info", "smtpapi")), as_domain="sendgrid.com",
                  v6_reporters=(), **kw)


def ses(domain: str, daily: float, *, label: str = "ses", **kw: Any) -> Source:
    return Source(label, domain, "Amazon SES", "aligned", daily, kw.pop("rhythm", SHOP),
                  ipv4=SES_V4, ips_per_report=5, envelope_from="amazonses.com",
                  dkim=(DkimAuth(domain, "6gbrjpgwjskckoa6a5zn6fwqkn67xbtw"),
                        DkimAuth("amazonses.com", "224i4yxa5dv7c2xz3womw6peuasteono")),
                  as_domain="amazon.com", v6_reporters=(), **kw)


def gws(domain: str, daily: float, *, label: str = "gws", **kw: Any) -> Source:
    return Source(label, domain, "Google Workspace", "aligned", daily, kw.pop("rhythm", BUSINESS),
                  ipv4=GOOGLE_V4, ips_per_report=4, envelope_from=domain, dkim=(DkimAuth(domain, "google"),),
                  as_domain="google.com", v6_reporters=(), **kw)


def mailchimp(domain: str, daily: float, *, label: str = "mailchimp", **kw: Any) -> Source:
    return Source(label, domain, "Mailchimp", "aligned", daily, kw.pop("rhythm", BUSINESS),
                  ipv4=MAILCHIMP_V4, ips_per_report=4, envelope_from="mail198.atl121.mcsv.net",
                  dkim=(DkimAuth(domain, "k1"), DkimAuth("mcsv.net", "k2")), as_domain="intuit.com",
                  v6_reporters=(), **kw)


def own_mta(domain: str, daily: float, *, label: str = "own-mta", **kw: Any) -> Source:
    return Source(label, domain, "own MTA (Hetzner)", "aligned", daily, STEADY, ipv4=HETZNER_V4,
                  ips_per_report=1, envelope_from=domain, dkim=(DkimAuth(domain, "mta2026"),),
                  as_domain="hetzner.de", v6_reporters=(), **kw)


def forwarder(domain: str, daily: float, *, selector: str = "selector1", label: str = "forwarder",
              ips: tuple[str, ...] = FASTMAIL_V4, **kw: Any) -> Source:
    return Source(label, domain, "Fastmail forwarding", "forwarder", daily, BUSINESS, ipv4=ips,
                  ips_per_report=2, envelope_from="messagingengine.com", dkim=(DkimAuth(domain, selector),),
                  as_domain="fastmail.com", v6_reporters=(), **kw)


def mailing_list(domain: str, daily: float, *, selector: str = "selector1", label: str = "mailing-list",
                 ips: tuple[str, ...] = UNIVERSITY_V4, list_domain: str = "lists.university.example",
                 **kw: Any) -> Source:
    return Source(label, domain, "university mailing list", "list", daily, BUSINESS, ipv4=ips,
                  ips_per_report=1, envelope_from=list_domain,
                  dkim=(DkimAuth(domain, selector, "fail"), DkimAuth(list_domain, "list")),
                  as_domain="gwdg.de", v6_reporters=(), **kw)


def spoof_noise(domain: str, daily: float, *, label: str = "spoof-noise", **kw: Any) -> Source:
    return Source(label, domain, "background forgery", "spoof", daily, STEADY, ipv4=SPOOF_NETS,
                  ips_per_report=3, **kw)


def host_in(prefix: str, rng: random.Random) -> str:
    """A host address inside a /16 ("142.93") or /24 ("45.155.205") prefix."""
    if prefix.count(".") == 2:
        return f"{prefix}.{rng.randint(2, 254)}"
    return f"{prefix}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"


def ramp(days: int, start: float = 0.05, end: float = 1.0) -> tuple[float, ...]:
    """Per-day multipliers rising linearly from ``start`` to ``end`` over ``days``."""
    if days <= 1:
        return (end,)
    return tuple(start + (end - start) * i / (days - 1) for i in range(days))


# --------------------------------------------------------------------------- delivery


def _epoch_dt(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def deliver(
    reports: list[ReportSpec],
    reporters: tuple[Reporter, ...],
    seed: int,
    *,
    late: dict[tuple[str, str], tuple[int, int, int]] | None = None,
    duplicates: Iterable[tuple[str, str, int]] = (),
    resend_new_id: Iterable[tuple[str, str, int]] = (),
    start: date,
) -> list[Delivery]:
    """Turn reports into files with arrival times, like a rua mailbox receives them.

    * arrival = end of the report period + the reporter's delay (hours, seeded);
    * ``late[(reporter, domain)] = (first_day, last_day, extra_hours)``: reports
      of those days arrive ``extra_hours`` later (an outage, then catch-up);
    * ``duplicates``: (reporter, domain, day index) delivered again 1-3 days
      later, once as the same file under another name and once forwarded by mail;
    * ``resend_new_id``: (reporter, domain, day index) sent again two days later
      with the same content under a new report id (ingest cannot tell).
    """
    reps = {r.key: r for r in reporters}
    late = late or {}
    dup = set(duplicates)
    resend = set(resend_new_id)
    out: list[Delivery] = []
    for spec in reports:
        rep = reps[spec.reporter]
        rng = random.Random(f"{seed}|arrive|{spec.report_id}")
        arrival = _epoch_dt(spec.end) + timedelta(hours=rng.uniform(*rep.delay_hours))
        day_index = (_epoch_dt(spec.begin).date() - start).days
        lw = late.get((spec.reporter, spec.domain))
        if lw and lw[0] <= day_index <= lw[1]:
            arrival += timedelta(hours=lw[2])
        xml = render_report(spec)
        kind: FileKind = "zip" if rep.key == "google" else "xml.gz"
        name, data = report_file(spec, xml, kind)
        out.append(Delivery(arrival, name, data, "report"))
        key = (spec.reporter, spec.domain, day_index)
        if key in dup:
            name2, _ = report_file(spec, xml, kind, unique_id="copy")
            out.append(Delivery(arrival + timedelta(hours=26), name2, data, "duplicate: same report, other name"))
            meta = MailMeta(from_addr=rep.mail_from, to_addr="dmarc@example.net",
                            subject=f"Report Domain: {spec.domain} Submitter: {rep.receiver} Report-ID: <{spec.report_id}>",
                            date=arrival, message_id=f"<{spec.report_id}.{seed}@{rep.receiver}>")
            inner = report_email([attachment_for(spec, xml, "gzip")], meta)
            fwd = MailMeta(from_addr="it@example.net", to_addr="dmarc@example.net", subject=f"Fwd: {meta.subject}",
                           date=arrival + timedelta(hours=60), message_id=f"<fwd.{spec.report_id}@example.net>")
            out.append(Delivery(arrival + timedelta(hours=60), f"fwd-{name}.eml", forward_email(inner, fwd),
                                "duplicate: forwarded by mail"))
        if key in resend:
            again = replace(spec, report_id=spec.report_id + "-resent")
            name3, data3 = report_file(again, render_report(again), kind)
            out.append(Delivery(arrival + timedelta(hours=48), "resent-" + name3, data3,
                                "duplicate: re-sent under a new report id"))
    out.sort(key=lambda d: (d.arrival, d.name))
    return out


def merge_days(reports: list[ReportSpec], reporter: str, domain: str, first: int, ndays: int,
               start: date) -> list[ReportSpec]:
    """Replace a reporter's daily reports for ``ndays`` days by one multi-day report."""
    begin = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()) + first * 86400
    end = begin + ndays * 86400
    inside = [r for r in reports if r.reporter == reporter and r.domain == domain and begin <= r.begin < end]
    if len(inside) < 2:
        return reports
    merged: dict[tuple[object, ...], RecordSpec] = {}
    for r in inside:
        for rec in r.records:
            k = rec.merge_key()
            merged[k] = replace(merged[k], count=merged[k].count + rec.count) if k in merged else rec
    first_r = inside[0]
    multi = replace(first_r, report_id=f"{first_r.report_id}-{ndays}d", begin=min(r.begin for r in inside),
                    end=max(r.end for r in inside), records=list(merged.values()),
                    tags=(*first_r.tags, "multi-day"))
    keep = [r for r in reports if r not in inside]
    return [*keep, multi]


# --------------------------------------------------------------------------- the benchmark world


def benchmark_world(seed: int = 11, history_days: int = 42, eval_days: int = 60,
                    start: date = date(2026, 1, 5)) -> ScenarioWorld:
    """Ten domains, seven receivers, ``history_days`` of history, then ``eval_days`` with scenarios.

    Scenarios (a)-(g) of the detection issue, a second variant of (a), and two
    control domains full of legitimate change.
    """
    days = history_days + eval_days
    e0 = history_days

    def d(i: int) -> date:
        return start + timedelta(days=i)

    def next_weekday(i: int, wd: int) -> int:
        while d(i).weekday() != wd:
            i += 1
        return i

    profiles = {
        "tenant.example": "b2b", "tenant2.example": "b2b", "spoofed.example": "nonprofit",
        "dkimbreak.example": "shop", "onboard.example": "nonprofit", "forwarded.example": "b2b",
        "reports.example": "b2b", "ramp.example": "shop", "quiet1.example": "b2b", "quiet2.example": "nonprofit",
    }
    doms = (
        domain_spec("tenant.example"), domain_spec("tenant2.example", "quarantine"),
        domain_spec("spoofed.example", "none"), domain_spec("dkimbreak.example", "quarantine"),
        domain_spec("onboard.example", "none"), domain_spec("forwarded.example"),
        domain_spec("reports.example"), domain_spec("ramp.example", "quarantine"),
        domain_spec("quiet1.example"), domain_spec("quiet2.example", "none"),
    )
    reps = reporters_for(profiles)
    rng = random.Random(f"{seed}|bench")
    s_a = next_weekday(e0 + 14, 5)  # a Saturday, like the sample world's seed case
    s_a2 = e0 + 33
    s_b = e0 + 10
    s_c = e0 + 24
    s_d = next_weekday(e0 + 17, 1)
    s_e1, s_e2 = e0 + 8, e0 + 13
    s_g = e0 + 28
    rot = e0 + 12
    sel_rot = e0 + 36
    new_hosts = tuple(f"40.107.247.{h}" for h in sorted(rng.sample(range(2, 250), 12)))
    burst_hosts = tuple(host_in(rng.choice(SPOOF_BURST_NETS), rng) for _ in range(40))
    consumer = (("google", 0.46), ("yahoo", 0.22), ("microsoft", 0.18), ("comcast", 0.07), ("rfc9990", 0.04),
                ("mimecast", 0.02), ("legacy", 0.01))
    sources = [
        # (a) compromised tenant: the domain's own Microsoft 365, new /24, far above baseline
        m365("tenant.example", 2200), sendgrid("tenant.example", 600), own_mta("tenant.example", 80),
        forwarder("tenant.example", 30), mailing_list("tenant.example", 10), spoof_noise("tenant.example", 30),
        m365("tenant.example", 3800, label="story:a", nets=new_hosts, rhythm=STEADY, first=s_a,
             shape=(0.5, 1.0, 1.2, 1.1, 0.9, 0.6), share=consumer),
        # (a2) compromised tenant, same Microsoft ranges, a new envelope-from
        m365("tenant2.example", 1800), gws("tenant2.example", 60), spoof_noise("tenant2.example", 20),
        m365("tenant2.example", 1500, label="story:a2", env="notify.tenant2.example", rhythm=STEADY,
             first=s_a2, shape=(1.0, 1.0, 1.0, 1.0), share=consumer),
        # (b) spoofing burst failing DMARC (p=none: it reaches inboxes)
        gws("spoofed.example", 400), mailchimp("spoofed.example", 40, weekly_peak=(1, 900.0)),
        spoof_noise("spoofed.example", 15),
        Source("story:b", "spoofed.example", "VPS hosters", "spoof", 2600, STEADY, ipv4=burst_hosts,
               ips_per_report=12, first=s_b, shape=(0.6, 1.0, 0.8, 0.3)),
        # (c) a legitimate service's DKIM breaks
        ses("dkimbreak.example", 1300, broken_dkim=(s_c, s_c + 3), broken_label="story:c"),
        gws("dkimbreak.example", 140), spoof_noise("dkimbreak.example", 40),
        # (d) a new legitimate ESP onboarded
        gws("onboard.example", 350), spoof_noise("onboard.example", 12),
        sendgrid("onboard.example", 260, label="story:d", first=s_d),
        # (e) heavy forwarding and a busy mailing list: must not alert
        m365("forwarded.example", 1600), spoof_noise("forwarded.example", 20),
        forwarder("forwarded.example", 1400, label="story:e", first=s_e1),
        mailing_list("forwarded.example", 500, label="story:e", first=s_e2),
        # (f) duplicate, late, re-sent and multi-day reports: must not alert
        m365("reports.example", 1500), ses("reports.example", 500), spoof_noise("reports.example", 25),
        # (g) slow ramp of passing abuse over two weeks through the authorized ESP (leaked API key)
        sendgrid("ramp.example", 600), gws("ramp.example", 120), spoof_noise("ramp.example", 20),
        sendgrid("ramp.example", 1800, label="story:g", first=s_g, shape=ramp(14, 0.05, 1.0)),
        # control 1: provider range rotation and DKIM key rotation (legitimate)
        m365("quiet1.example", 2000, last=rot - 1),
        m365("quiet1.example", 2000, nets=(*M365_BASELINE_V4[1:], "40.107.212"), first=rot, last=sel_rot - 1),
        m365("quiet1.example", 2000, nets=(*M365_BASELINE_V4[1:], "40.107.212"), selector="selector2",
             first=sel_rot),
        own_mta("quiet1.example", 60), forwarder("quiet1.example", 40), spoof_noise("quiet1.example", 25),
        # control 2: newsletters, a busy Google Group, spoof noise with small waves
        gws("quiet2.example", 300), mailchimp("quiet2.example", 30, weekly_peak=(3, 1500.0)),
        mailing_list("quiet2.example", 60, selector="google", ips=GOOGLE_GROUPS_V4, list_domain="googlegroups.com"),
        spoof_noise("quiet2.example", 30),
        spoof_noise("quiet2.example", 60, label="spoof-wave", first=e0 + 20, shape=(1.0, 1.6, 0.7)),
    ]
    world = build_world(seed, days, start, domains=doms, reporters=reps, sources=tuple(sources), quirks=False)
    reports = list(world.reports)
    # (f): Yahoo sends one 3-day report instead of three daily ones, twice.
    reports = merge_days(reports, "yahoo", "reports.example", e0 + 5, 3, start)
    reports = merge_days(reports, "yahoo", "reports.example", e0 + 30, 3, start)
    world.reports = reports
    late = {("microsoft", "reports.example"): (e0 + 15, e0 + 19, 96),
            ("google", "reports.example"): (e0 + 40, e0 + 41, 60),
            ("yahoo", "ramp.example"): (e0 + 2, e0 + 50, 40)}
    dups = [("google", "reports.example", e0 + 3), ("microsoft", "reports.example", e0 + 22),
            ("google", "tenant.example", e0 + 6), ("mimecast", "reports.example", e0 + 44)]
    resends = [("google", "reports.example", e0 + 26), ("microsoft", "reports.example", e0 + 27),
               ("yahoo", "reports.example", e0 + 47)]
    deliveries = deliver(reports, reps, seed, late=late, duplicates=dups, resend_new_id=resends, start=start)
    scenarios = [
        Scenario("a", "compromised tenant: own Microsoft 365, new /24, volume far above baseline",
                 "tenant.example", d(s_a), d(s_a + 5),
                 ("new_ip_range_in_authorized_provider", "volume_spike", "new_identifier"), 1, seed_case=True),
        Scenario("a2", "compromised tenant: own Microsoft 365 ranges, new envelope-from",
                 "tenant2.example", d(s_a2), d(s_a2 + 3), ("new_identifier", "volume_spike"), 1),
        Scenario("b", "spoofing burst failing DMARC", "spoofed.example", d(s_b), d(s_b + 3), ("spoofing_burst",), 1),
        Scenario("c", "a legitimate service's DKIM breaks", "dkimbreak.example", d(s_c), d(s_c + 3),
                 ("auth_regression",), 1),
        Scenario("d", "new legitimate ESP onboarded", "onboard.example", d(s_d), d(days - 1),
                 ("new_source",), 1),
        Scenario("e", "heavy forwarding and a mailing list (must not alert)", "forwarded.example", d(s_e1),
                 d(days - 1), ()),
        Scenario("f", "duplicate, late, re-sent and multi-day reports (must not alert)", "reports.example",
                 d(e0), d(days - 1), ()),
        Scenario("g", "slow ramp of passing abuse over two weeks", "ramp.example", d(s_g), d(s_g + 13),
                 ("volume_spike", "new_identifier", "new_ip_range_in_authorized_provider"), 4),
        Scenario("h", "control: provider range rotation, DKIM key rotation (must not alert)", "quiet1.example",
                 d(e0), d(days - 1), ()),
        Scenario("i", "control: newsletters, Google Group, spoof waves (must not alert)", "quiet2.example",
                 d(e0), d(days - 1), ()),
    ]
    return ScenarioWorld(world, scenarios, deliveries, eval_start=d(e0))


# --------------------------------------------------------------------------- scoring a run


@dataclass
class ScenarioResult:
    scenario: Scenario
    detected: bool
    delay: int | None
    severity: str | None
    kinds: tuple[str, ...]
    anomaly_ids: tuple[str, ...]


def match(scenario: Scenario, anomaly: dict[str, object]) -> bool:
    """Does a detect --format json element describe this scenario (domain, days, kind)?"""
    if anomaly["domain"] != scenario.domain:
        return False
    first = date.fromisoformat(str(anomaly["first_day"]))
    last = date.fromisoformat(str(anomaly["last_day"]))
    if first > scenario.end + timedelta(days=1) or last < scenario.start - timedelta(days=1):
        return False
    return not scenario.kinds or anomaly["kind"] in scenario.kinds
