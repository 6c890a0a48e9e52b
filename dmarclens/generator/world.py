"""A small simulated mail world that produces realistic aggregate reports.

Why simulate instead of hand-writing fixtures: the detector needs weeks of
history with a weekday rhythm, noise, provider IP rotation, forwarders and
background spoofing before a change means anything, and the dashboard needs
data that looks like a real rua mailbox. Three domains send mail through the
providers they really would use (Microsoft 365, Google Workspace, SendGrid,
Mailchimp, Amazon SES, an own MTA), receivers that mimic Google, Microsoft,
Yahoo, Mimecast, Comcast, an RFC 9990 reporter and an old draft-schema
reporter report on it, and four *stories* are planted for a domain owner to
notice. The world keeps a ledger of what was reported per day, domain and
sender, so tests and benchmarks can compare detector output with the truth.

Source IPs come from the providers' real outbound ranges so that the IPinfo
Lite database shipped with parsedmarc names the right owner; the domains are
RFC 2606 names. Everything is driven by ``random.Random`` instances seeded
from ``(seed, purpose...)`` strings, never the global generator and never the
wall clock: the same arguments always give the same world, and changing one
sender does not reshuffle the others.
"""

from __future__ import annotations

import ipaddress
import random
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from .spec import DkimAuth, OverrideReason, PolicySpec, RecordSpec, ReportFormat, ReportSpec, SpfAuth

# Weekday multipliers, Monday first. Businesses mail little at weekends; a
# shop's order confirmations dip less.
BUSINESS: tuple[float, ...] = (1.05, 1.0, 1.0, 0.95, 0.85, 0.3, 0.25)
SHOP: tuple[float, ...] = (0.95, 0.95, 0.95, 1.0, 1.05, 0.85, 0.8)
STEADY: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 0.85, 0.85)

SourceKind = Literal["aligned", "forwarder", "list", "spoof"]
StoryKind = Literal["passing-abuse", "spoofing", "auth-regression", "new-sender"]

# Microsoft 365 outbound /24s an EU tenant normally uses (IE, NL, CH).
M365_BASELINE_V4 = (
    "40.107.20",
    "40.107.22",
    "40.107.23",
    "40.107.104",
    "40.107.105",
    "52.101.66",
    "52.101.69",
    "52.101.70",
)
M365_BASELINE_V6 = ("2a01:111:f400:7e1a", "2a01:111:f400:7e1b", "2a01:111:f403:2612")
# The seed case: M365 outbound addresses in a /24 the tenant never used before.
M365_STORY_NET = "40.107.247"
GOOGLE_V4 = ("209.85.208", "209.85.210", "209.85.214", "209.85.216", "209.85.218", "209.85.219", "209.85.221")
GOOGLE_GROUPS_V4 = ("209.85.220",)
SES_V4 = ("54.240.8", "54.240.9", "54.240.10", "54.240.11")
MAILCHIMP_V4 = ("198.2.139", "198.2.145", "198.2.180", "205.201.130")
# Background forgers: VPS hosters and residential access networks. The burst's
# networks are kept out of this list so its addresses are truly never seen before.
SPOOF_NETS = (
    "178.62", "113.160", "14.160", "117.1", "36.66", "201.1", "73.1", "185.220.101",
    "5.188.206", "91.240.118", "41.1", "77.1", "62.210", "51.15",
)  # fmt: skip
SPOOF_BURST_NETS = ("142.93", "134.209", "104.248", "45.155.205", "89.248.165", "103.152.220")


@dataclass(frozen=True)
class DomainSpec:
    """A policy domain and the DMARC record it publishes."""

    name: str
    policy: PolicySpec
    recipients: tuple[str, ...]  # envelope_to domains a Microsoft-style reporter lists
    description: str


@dataclass(frozen=True)
class Source:
    """One sender of mail for a domain, as the receivers see it.

    ``ipv4`` entries are whole addresses or prefixes (``"40.107.22"`` = a /24,
    ``"142.93"`` = a /16) from which hosts are drawn each day, the way large
    providers rotate through their pools. ``label`` tags every record the
    source produces.
    """

    label: str
    domain: str
    provider: str
    kind: SourceKind
    daily: float  # messages on an ordinary weekday, all receivers together
    rhythm: tuple[float, ...] = BUSINESS
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    ips_per_report: int = 4
    envelope_from: str | None = None
    dkim: tuple[DkimAuth, ...] = ()
    as_domain: str | None = None  # IPinfo as_domain of its addresses (checked by tests)
    first: int = 0
    last: int | None = None
    weekly_peak: tuple[int, float] | None = None  # (weekday, extra messages) e.g. a newsletter
    shape: tuple[float, ...] = ()  # per-day multipliers from ``first`` (bursts)
    share: tuple[tuple[str, float], ...] = ()  # per-reporter share, overrides the domain's
    broken_dkim: tuple[int, int] | None = None  # days when the domain's own signature fails
    broken_label: str = ""
    v6_reporters: tuple[str, ...] = ("google",)

    def active(self, day: int) -> bool:
        return day >= self.first and (self.last is None or day <= self.last)


@dataclass(frozen=True)
class Reporter:
    """A receiver that sends aggregate reports, and its habits."""

    key: str
    org_name: str
    email: str
    receiver: str  # domain for file names and subjects
    mail_from: str  # From: of its report mail
    fmt: ReportFormat = "rfc7489"
    shares: tuple[tuple[str, float], ...] = ()  # (domain, fraction of that domain's mail it receives)
    end_inclusive: bool = True  # end = begin + 86399 (Google) vs begin + 86400 (Microsoft)
    omit_envelope_from: float = 0.0  # probability a report leaves envelope_from out
    envelope_to: bool = False
    skip: float = 0.0  # probability of a missing day
    period_days: int = 1
    outage_at: float | None = None  # fraction of the window where an outage ends in one 72-hour report
    version: str | None = None
    xml_declaration: str = '<?xml version="1.0" encoding="UTF-8"?>'
    root_attrs: tuple[tuple[str, str], ...] = ()
    indent: str = "  "
    extra_contact_info: str | None = None
    generator: str | None = None
    arc_override: bool = False  # applies ARC local_policy override to mailing lists
    broken_dkim_result: str = "fail"
    delay_hours: tuple[int, int] = (2, 10)  # report mail sent this long after the period

    def share(self, domain: str) -> float:
        return dict(self.shares).get(domain, 0.0)


@dataclass(frozen=True)
class Story:
    """A planted event a domain owner should notice, with its ground truth.

    ``label`` is the record label carrying it, so a benchmark can tell which
    stored rows belong to the story; ``ips``/``messages``/``daily`` are what
    actually ended up in reports (skipped reporter days excluded).
    """

    key: str
    kind: StoryKind
    title: str
    domain: str
    label: str
    provider: str
    first_day: date
    last_day: date
    networks: tuple[str, ...]
    ips: tuple[str, ...]
    messages: int
    daily: tuple[tuple[date, int], ...]
    dmarc_pass: bool
    baseline_label: str | None
    baseline_weekday_median: float | None
    baseline_weekend_median: float | None
    summary: str


@dataclass
class World:
    """Everything simulated: domains, senders, reporters, reports and stories."""

    seed: int
    start: date
    days: int
    domains: tuple[DomainSpec, ...]
    sources: tuple[Source, ...]
    reporters: tuple[Reporter, ...]
    reports: list[ReportSpec] = field(default_factory=list)
    stories: list[Story] = field(default_factory=list)
    # (day, domain, label) -> messages that appear in reports for that day
    ledger: dict[tuple[date, str, str], int] = field(default_factory=dict)
    # report_id -> the days its records cover (a 72 h report covers three)
    report_days: dict[str, tuple[date, ...]] = field(default_factory=dict)

    def day(self, index: int) -> date:
        return self.start + timedelta(days=index)

    def story(self, key: str) -> Story:
        for story in self.stories:
            if story.key == key:
                return story
        raise KeyError(key)

    def reporter(self, key: str) -> Reporter:
        for rep in self.reporters:
            if rep.key == key:
                return rep
        raise KeyError(key)

    def domain(self, name: str) -> DomainSpec:
        for dom in self.domains:
            if dom.name == name:
                return dom
        raise KeyError(name)

    def daily_messages(self, domain: str, label: str) -> dict[date, int]:
        """Reported messages per day for one sender label of one domain."""
        out = {self.day(i): 0 for i in range(self.days)}
        for (day, dom, lab), count in self.ledger.items():
            if dom == domain and lab == label:
                out[day] += count
        return out

    def records(self) -> Iterable[tuple[ReportSpec, RecordSpec]]:
        for report in self.reports:
            for record in report.records:
                yield report, record


# --------------------------------------------------------------------------- helpers


def _rng(seed: int, *parts: object) -> random.Random:
    """An independent generator per purpose (string seeds hash deterministically)."""
    return random.Random("|".join([str(seed), *map(str, parts)]))


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _org(domain: str) -> str:
    """Organizational domain for the names used here (no multi-label suffixes)."""
    return ".".join(domain.lower().rstrip(".").split(".")[-2:])


def _aligned(a: str, b: str) -> bool:
    return _org(a) == _org(b)


def _address(entry: str, rng: random.Random) -> str:
    if ":" in entry:
        return entry if "::" in entry else f"{entry}::{rng.randint(0x10, 0xFFF):x}"
    dots = entry.count(".")
    if dots == 3:
        return entry
    if dots == 2:
        return f"{entry}.{rng.randint(2, 254)}"
    return f"{entry}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """Split ``total`` into ``parts`` positive-ish integers with uneven weights."""
    if parts <= 1:
        return [total]
    weights = [rng.random() + 0.15 for _ in range(parts)]
    scale = total / sum(weights)
    counts = [int(w * scale) for w in weights]
    for i in range(total - sum(counts)):
        counts[i % parts] += 1
    return counts


def _stochastic_round(value: float, rng: random.Random) -> int:
    whole = int(value)
    return whole + (1 if rng.random() < value - whole else 0)


# --------------------------------------------------------------------------- the cast


def default_domains() -> tuple[DomainSpec, ...]:
    """The three simulated policy domains (RFC 2606 names)."""
    return (
        DomainSpec(
            "example.com",
            PolicySpec("example.com", p="reject", sp="reject", pct=100, fo="1", np="reject"),
            recipients=("contoso.example", "fabrikam.example", "outlook.com", "northwind.example"),
            description="B2B company on Microsoft 365, SendGrid for transactional mail, own MTA for alerts",
        ),
        DomainSpec(
            "example.org",
            PolicySpec("example.org", p="none", sp=None, pct=100),
            recipients=("outlook.com", "hotmail.com", "fabrikam.example"),
            description="Non-profit on Google Workspace, monitoring only (p=none); starts Mailchimp newsletters",
        ),
        DomainSpec(
            "shop.example.net",
            PolicySpec("shop.example.net", p="quarantine", sp="quarantine", pct=100, np="quarantine"),
            recipients=("outlook.com", "hotmail.com", "live.com"),
            description="Web shop sending order mail through Amazon SES, staff on Google Workspace",
        ),
    )


def default_reporters() -> tuple[Reporter, ...]:
    """Receivers whose habits mimic real receivers (Google, Microsoft, Yahoo, Mimecast ...)."""
    return (
        Reporter(
            key="google",
            org_name="google.com",
            email="noreply-dmarc-support@google.com",
            receiver="google.com",
            mail_from="noreply-dmarc-support@google.com",
            shares=(("example.com", 0.34), ("example.org", 0.50), ("shop.example.net", 0.42)),
            end_inclusive=True,
            omit_envelope_from=0.85,
            xml_declaration='<?xml version="1.0" encoding="UTF-8" ?>',
            extra_contact_info="https://support.google.com/a/answer/2466580",
            arc_override=True,
            delay_hours=(3, 9),
        ),
        Reporter(
            key="microsoft",
            org_name="Enterprise Outlook",
            email="dmarcreport@microsoft.com",
            receiver="enterprise.protection.outlook.com",
            mail_from="dmarcreport@microsoft.com",
            shares=(("example.com", 0.30), ("example.org", 0.18), ("shop.example.net", 0.22)),
            end_inclusive=False,
            envelope_to=True,
            version="1.0",
            xml_declaration='<?xml version="1.0"?>',
            root_attrs=(
                ("xmlns:xs", "http://www.w3.org/2001/XMLSchema"),
                ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
            ),
            arc_override=True,
            broken_dkim_result="permerror",
            delay_hours=(8, 20),
        ),
        Reporter(
            key="yahoo",
            org_name="Yahoo",
            email="dmarchelp@yahooinc.com",
            receiver="yahoo.com",
            mail_from="noreply@dmarc.yahoo.com",
            shares=(("example.com", 0.05), ("example.org", 0.10), ("shop.example.net", 0.14)),
            skip=0.05,
            indent="",
            delay_hours=(1, 30),
        ),
        Reporter(
            key="mimecast",
            org_name="Mimecast",
            email="dmarc-reports@mimecast.com",
            receiver="mimecast.com",
            mail_from="dmarc-reports@mimecast.com",
            shares=(("example.com", 0.10),),
            version="1.0",
            delay_hours=(1, 4),
        ),
        Reporter(
            key="comcast",
            org_name="comcast.net",
            email="dmarc_support@comcast.net",
            receiver="comcast.net",
            mail_from="dmarc-reports@comcast.net",
            outage_at=0.6,
            shares=(("example.com", 0.02), ("example.org", 0.05), ("shop.example.net", 0.06)),
            skip=0.10,
            delay_hours=(5, 12),
        ),
        Reporter(
            key="rfc9990",
            org_name="receiver.example",
            email="dmarc-noreply@receiver.example",
            receiver="receiver.example",
            mail_from="dmarc-noreply@receiver.example",
            fmt="rfc9990",
            shares=(("example.com", 0.03), ("example.org", 0.03), ("shop.example.net", 0.03)),
            skip=0.03,
            generator="example-mta dmarc-reports/2.1.0",
            arc_override=True,
            delay_hours=(1, 3),
        ),
        Reporter(
            key="legacy",
            org_name="Legacy ISP",
            email="postmaster@legacy-isp.example",
            receiver="legacy-isp.example",
            mail_from="postmaster@legacy-isp.example",
            fmt="draft",
            shares=(("example.com", 0.015),),
            period_days=7,
            end_inclusive=True,
            extra_contact_info="http://legacy-isp.example/dmarc",
            delay_hours=(20, 40),
        ),
    )


@dataclass(frozen=True)
class StoryDays:
    """Day indexes where the stories start, derived from the world length."""

    spoof: int
    onboarding: int
    regression: int
    seed: int


def story_days(start: date, days: int) -> StoryDays:
    """Place the stories proportionally, so shorter worlds still hold all four.

    The seed case starts on a Saturday: abuse of a compromised tenant often
    begins at a weekend, when the weekday-aware baseline is lowest.
    """

    def next_weekday(index: int, weekday: int) -> int:
        while (start + timedelta(days=index)).weekday() != weekday:
            index += 1
        return index

    return StoryDays(
        spoof=int(days * 0.3),
        onboarding=next_weekday(int(days * 0.4), 1),  # a Tuesday
        regression=int(days * 0.5),
        seed=next_weekday(int(days * 0.75), 5),  # a Saturday
    )


def default_sources(seed: int, start: date, days: int) -> tuple[Source, ...]:
    """Who sends mail for each domain, including the planted stories."""
    sd = story_days(start, days)
    rng = _rng(seed, "cast")
    seed_hosts = tuple(f"{M365_STORY_NET}.{h}" for h in sorted(rng.sample(range(2, 250), 12)))
    burst_hosts = tuple(_address(rng.choice(SPOOF_BURST_NETS), rng) for _ in range(37))
    m365_dkim = (DkimAuth("example.com", "selector1"),)
    com, org, shop = "example.com", "example.org", "shop.example.net"
    # fmt: off
    return (
        # ---- example.com: Microsoft 365 tenant, SendGrid, own MTA, plus forwarders, a list, forgers
        Source(label="m365", domain=com, provider="Microsoft 365", kind="aligned", daily=2200,
               ipv4=M365_BASELINE_V4, ipv6=M365_BASELINE_V6, ips_per_report=6, envelope_from=com,
               dkim=m365_dkim, as_domain="microsoft.com"),
        Source(label="sendgrid", domain=com, provider="SendGrid", kind="aligned", daily=700, rhythm=STEADY,
               ipv4=("167.89.54.131", "149.72.160.17"), ips_per_report=2, envelope_from="em4821.example.com",
               dkim=(DkimAuth(com, "s1"), DkimAuth("sendgrid.info", "smtpapi")), as_domain="sendgrid.com"),
        Source(label="own-mta", domain=com, provider="own MTA (Hetzner)", kind="aligned", daily=90,
               rhythm=STEADY, ipv4=("94.130.13.77",), ipv6=("2a01:4f8:c17:1f2a::25",), ips_per_report=2,
               envelope_from=com, dkim=(DkimAuth(com, "mta2026"),), as_domain="hetzner.de",
               v6_reporters=("google", "microsoft", "rfc9990")),
        Source(label="forwarder", domain=com, provider="Fastmail forwarding", kind="forwarder", daily=30,
               ipv4=("103.168.172.150", "103.168.172.152", "103.168.172.157"), ips_per_report=2,
               envelope_from="messagingengine.com", dkim=m365_dkim, as_domain="fastmail.com"),
        Source(label="mailing-list", domain=com, provider="university mailing list", kind="list", daily=10,
               ipv4=("134.76.10.46",), ips_per_report=1, envelope_from="lists.university.example",
               dkim=(DkimAuth(com, "selector1", "fail"), DkimAuth("lists.university.example", "list")),
               as_domain="gwdg.de"),
        Source(label="spoof-noise", domain=com, provider="background forgery", kind="spoof", daily=30,
               rhythm=STEADY, ipv4=SPOOF_NETS, ips_per_report=4),
        # The seed case: the tenant's own DKIM and SPF, new /24, consumer recipients, from a Saturday.
        # The weekly legacy reporter gets none of it: a store spreads a weekly report evenly over its
        # days, which would show the new /24 days before it first sent anything.
        Source(label="story:m365-burst", domain=com, provider="Microsoft 365", kind="aligned", daily=4500,
               rhythm=STEADY, ipv4=seed_hosts, ips_per_report=6, envelope_from=com, dkim=m365_dkim,
               as_domain="microsoft.com", first=sd.seed, shape=(0.5, 1.0, 1.2, 1.1, 0.9, 0.7),
               share=(("google", 0.46), ("yahoo", 0.22), ("microsoft", 0.18), ("comcast", 0.07),
                      ("rfc9990", 0.04), ("mimecast", 0.03)),
               v6_reporters=()),
        # ---- example.org: Google Workspace, a Google Group, forgers; Mailchimp from a Tuesday on
        Source(label="gws", domain=org, provider="Google Workspace", kind="aligned", daily=320,
               ipv4=GOOGLE_V4, ips_per_report=4, envelope_from=org, dkim=(DkimAuth(org, "google"),),
               as_domain="google.com", v6_reporters=()),
        Source(label="mailing-list", domain=org, provider="Google Groups", kind="list", daily=18,
               ipv4=GOOGLE_GROUPS_V4, ips_per_report=2, envelope_from="googlegroups.com",
               dkim=(DkimAuth(org, "google", "fail"), DkimAuth("googlegroups.com", "20230601")),
               as_domain="google.com", v6_reporters=()),
        Source(label="spoof-noise", domain=org, provider="background forgery", kind="spoof", daily=12,
               rhythm=STEADY, ipv4=SPOOF_NETS, ips_per_report=3),
        Source(label="story:mailchimp-onboarding", domain=org, provider="Mailchimp", kind="aligned", daily=35,
               ipv4=MAILCHIMP_V4, ips_per_report=4, envelope_from="mail198.atl121.mcsv.net",
               dkim=(DkimAuth(org, "k1"), DkimAuth("mcsv.net", "k2")), as_domain="intuit.com",
               first=sd.onboarding, weekly_peak=(1, 1200.0), v6_reporters=()),
        # ---- shop.example.net: Amazon SES (its DKIM breaks for four days), staff on Google, forgers
        Source(label="ses", domain=shop, provider="Amazon SES", kind="aligned", daily=1300, rhythm=SHOP,
               ipv4=SES_V4, ips_per_report=5, envelope_from="amazonses.com",
               dkim=(DkimAuth(shop, "6gbrjpgwjskckoa6a5zn6fwqkn67xbtw"),
                     DkimAuth("amazonses.com", "224i4yxa5dv7c2xz3womw6peuasteono")),
               as_domain="amazon.com", broken_dkim=(sd.regression, sd.regression + 3),
               broken_label="story:ses-dkim-regression", v6_reporters=()),
        Source(label="gws", domain=shop, provider="Google Workspace", kind="aligned", daily=140,
               ipv4=GOOGLE_V4, ips_per_report=3, envelope_from=shop, dkim=(DkimAuth(shop, "google"),),
               as_domain="google.com", v6_reporters=()),
        Source(label="spoof-noise", domain=shop, provider="background forgery", kind="spoof", daily=40,
               rhythm=STEADY, ipv4=SPOOF_NETS, ips_per_report=4),
        Source(label="story:spoof-burst", domain=shop, provider="VPS hosters", kind="spoof", daily=3000,
               rhythm=STEADY, ipv4=burst_hosts, ips_per_report=12, first=sd.spoof, shape=(0.4, 1.0, 0.7, 0.25),
               share=(("google", 0.45), ("yahoo", 0.2), ("microsoft", 0.2), ("comcast", 0.1), ("rfc9990", 0.05))),
    )
    # fmt: on


# --------------------------------------------------------------------------- simulation


_SPOOF_WORDS = ("invoice", "secure", "notify", "billing", "account", "update", "promo", "alert")


class _Simulator:
    def __init__(self, world: World) -> None:
        self.w = world
        self.seed = world.seed
        self.domains = {d.name: d for d in world.domains}
        # (reporter, domain, day) -> rows, before they are grouped into reports
        self.cells: dict[tuple[str, str, int], list[RecordSpec]] = defaultdict(list)

    # ---- one day of one source -------------------------------------------------

    def run_source(self, src: Source, day: int) -> None:
        if not src.active(day):
            return
        weekday = self.w.day(day).weekday()
        rng = _rng(self.seed, "vol", src.domain, src.label, day)
        base = src.daily * src.rhythm[weekday]
        if src.weekly_peak and weekday == src.weekly_peak[0]:
            base += src.weekly_peak[1]
        if src.shape:
            offset = day - src.first
            if offset >= len(src.shape):
                return
            base *= src.shape[offset]
        total = base * rng.lognormvariate(0.0, 0.12)
        pool = random.Random(rng.random())
        day_v4 = [_address(e, pool) for e in self._pick(src.ipv4, src.ips_per_report * 2, pool)]
        day_v6 = [_address(e, pool) for e in self._pick(src.ipv6, max(1, src.ips_per_report // 2), pool)]
        overrides = dict(src.share)
        for rep in self.w.reporters:
            share = overrides.get(rep.key, 0.0) if overrides else rep.share(src.domain)
            if share <= 0:
                continue
            n = _stochastic_round(total * share * rng.uniform(0.9, 1.1), rng)
            if n <= 0:
                continue
            ips = list(dict.fromkeys(day_v4))
            if rep.key in src.v6_reporters:
                ips += list(dict.fromkeys(day_v6))
            k = max(1, min(src.ips_per_report, n, len(ips)))
            chosen = rng.sample(ips, k)
            for ip, count in zip(chosen, _split(n, k, rng), strict=True):
                if count > 0:
                    self._rows(src, rep, day, ip, count, rng)

    @staticmethod
    def _pick(entries: tuple[str, ...], n: int, rng: random.Random) -> list[str]:
        if not entries:
            return []
        fixed = all((":" in e and "::" in e) or e.count(".") == 3 for e in entries)
        if fixed:
            return list(entries)
        return [rng.choice(entries) for _ in range(n)]

    def _rows(self, src: Source, rep: Reporter, day: int, ip: str, count: int, rng: random.Random) -> None:
        dom = self.domains[src.domain]
        parts: list[tuple[str | None, int]]
        if rep.envelope_to:
            targets = rng.sample(dom.recipients, min(len(dom.recipients), 1 + int(rng.random() * 2.2)))
            parts = list(zip(targets, _split(count, len(targets), rng), strict=True))
        else:
            parts = [(None, count)]
        for env_to, c in parts:
            if c <= 0:
                continue
            for rec in self._auth(src, rep, day, ip, c, env_to, rng):
                self.cells[(rep.key, src.domain, day)].append(rec)

    def _auth(
        self,
        src: Source,
        rep: Reporter,
        day: int,
        ip: str,
        count: int,
        env_to: str | None,
        rng: random.Random,
    ) -> list[RecordSpec]:
        header = src.domain
        label = src.label
        dkim = src.dkim
        if src.kind == "aligned":
            env = src.envelope_from or header
            spf = (SpfAuth(env, "pass"),)
            if src.broken_dkim and src.broken_dkim[0] <= day <= src.broken_dkim[1]:
                label = src.broken_label or label
                dkim = tuple(
                    DkimAuth(d.domain, d.selector, rep.broken_dkim_result if d.domain == header else d.result)
                    for d in dkim
                )
            return [self._finish(src, rep, ip, count, header, env, env_to, dkim, spf, label)]
        if src.kind == "forwarder":
            # Half the forwarded copies keep the original envelope (SPF fails at
            # the forwarder's IP), half are SRS-rewritten to the forwarder's domain.
            srs = _split(count, 2, rng)
            out = []
            for share, (env, result) in zip(
                srs, ((header, "softfail"), (src.envelope_from or header, "pass")), strict=True
            ):
                if share:
                    out.append(
                        self._finish(
                            src, rep, ip, share, header, env, env_to, dkim, (SpfAuth(env, result),), label
                        )
                    )
            return out
        if src.kind == "list":
            env = src.envelope_from or header
            return [
                self._finish(src, rep, ip, count, header, env, env_to, dkim, (SpfAuth(env, "pass"),), label)
            ]
        # spoof: forged From, no or broken DKIM, SPF for the forger's envelope.
        if rng.random() < 0.5:
            env = header
            spf = (SpfAuth(env, rng.choice(("fail", "softfail", "fail"))),)
        else:
            env = f"{rng.choice(_SPOOF_WORDS)}{rng.randint(1, 99)}.test"
            spf = (SpfAuth(env, rng.choice(("pass", "none", "neutral"))),)
        if rng.random() < 0.25:
            dkim = (DkimAuth(rng.choice((header, env)), rng.choice(("default", "s1", "mail")), "fail"),)
        else:
            dkim = ()
        return [self._finish(src, rep, ip, count, header, env, env_to, dkim, spf, label)]

    def _finish(
        self,
        src: Source,
        rep: Reporter,
        ip: str,
        count: int,
        header: str,
        env: str,
        env_to: str | None,
        dkim: tuple[DkimAuth, ...],
        spf: tuple[SpfAuth, ...],
        label: str,
    ) -> RecordSpec:
        policy = self.domains[src.domain].policy
        dkim_eval = "pass" if any(d.result == "pass" and _aligned(d.domain, header) for d in dkim) else "fail"
        spf_eval = (
            "pass" if any(s.result == "pass" and _aligned(s.domain, header) for s in spf[:1]) else "fail"
        )
        reasons: tuple[OverrideReason, ...] = ()
        if dkim_eval == "pass" or spf_eval == "pass":
            disposition = "pass" if rep.fmt == "rfc9990" and policy.p != "none" else "none"
        elif src.kind == "list" and rep.arc_override and policy.p != "none":
            disposition = "none"
            reasons = (OverrideReason("local_policy", "arc=pass"),)
        elif src.kind == "list" and policy.p != "none" and rep.fmt != "rfc9990":
            disposition = "none"
            reasons = (OverrideReason("mailing_list", None),)
        else:
            disposition = policy.p
        return RecordSpec(
            source_ip=ip,
            count=count,
            header_from=header,
            disposition=disposition,
            dkim_eval=dkim_eval,
            spf_eval=spf_eval,
            envelope_from=env,
            envelope_to=env_to,
            dkim=dkim,
            spf=spf,
            reasons=reasons,
            label=label,
        )

    # ---- reports -----------------------------------------------------------------

    def periods(self, rep: Reporter) -> list[tuple[int, int]]:
        """(first day, number of days) for each report this reporter sends."""
        rng = _rng(self.seed, "periods", rep.key)
        days = self.w.days
        if rep.period_days > 1:
            return [(d, rep.period_days) for d in range(0, days - rep.period_days + 1, rep.period_days)]
        out: list[tuple[int, int]] = []
        multi_day = int(days * rep.outage_at) if rep.outage_at is not None else None
        # Days that are never reported: a fixed number, so every skipping
        # reporter really does miss some days whatever the seed.
        n_skip = min(days - 1, max(1, round(rep.skip * days))) if rep.skip > 0 and days > 2 else 0
        skipped = set(rng.sample(range(1, days), n_skip))
        d = 0
        while d < days:
            if multi_day is not None and d == multi_day and d + 3 <= days:
                out.append((d, 3))  # an outage, then one 72-hour report
                d += 3
                continue
            if d in skipped:
                d += 1
                continue
            out.append((d, 1))
            d += 1
        return out

    def build_reports(self) -> None:
        for rep in self.w.reporters:
            for first, ndays in self.periods(rep):
                for dom in self.w.domains:
                    if rep.share(dom.name) <= 0:
                        continue
                    merged: dict[tuple[object, ...], RecordSpec] = {}
                    covered: list[date] = []
                    for d in range(first, first + ndays):
                        cell = self.cells.get((rep.key, dom.name, d), [])
                        if cell:
                            covered.append(self.w.day(d))
                        for rec in cell:
                            key = rec.merge_key()
                            if key in merged:
                                old = merged[key]
                                merged[key] = replace(old, count=old.count + rec.count)
                            else:
                                merged[key] = rec
                            ledger_key = (self.w.day(d), dom.name, rec.label)
                            self.w.ledger[ledger_key] = self.w.ledger.get(ledger_key, 0) + rec.count
                    if not merged:
                        continue
                    spec = self._report(rep, dom, first, ndays, list(merged.values()))
                    self.w.reports.append(spec)
                    self.w.report_days[spec.report_id] = tuple(covered)

    def _report(
        self, rep: Reporter, dom: DomainSpec, first: int, ndays: int, records: list[RecordSpec]
    ) -> ReportSpec:
        rng = _rng(self.seed, "report", rep.key, dom.name, first)
        begin = _epoch(self.w.day(first))
        end = begin + 86400 * ndays - (1 if rep.end_inclusive else 0)
        if rng.random() < rep.omit_envelope_from:
            records = [replace(r, envelope_from=None) for r in records]
            records = _remerge(records)
        if not rep.envelope_to:
            records = [r if r.envelope_to is None else replace(r, envelope_to=None) for r in records]
        policy = dom.policy
        if rep.fmt == "rfc9990":
            policy = PolicySpec(
                policy.domain,
                p=policy.p,
                sp=policy.sp,
                pct=None,
                adkim=policy.adkim,
                aspf=policy.aspf,
                fo=policy.fo,
                np=policy.np or policy.p,
                testing="n",
                discovery_method="treewalk",
            )
        return ReportSpec(
            org_name=rep.org_name,
            email=rep.email,
            report_id=_report_id(rep, dom.name, begin, end, rng),
            begin=begin,
            end=end,
            policy=policy,
            records=records,
            receiver=rep.receiver,
            fmt=rep.fmt,
            extra_contact_info=rep.extra_contact_info,
            generator=rep.generator,
            version=rep.version,
            xml_declaration=rep.xml_declaration,
            root_attrs=rep.root_attrs,
            indent=rep.indent,
            reporter=rep.key,
            tags=("multi-day",) if ndays > 1 else (),
        )


def _remerge(records: list[RecordSpec]) -> list[RecordSpec]:
    merged: dict[tuple[object, ...], RecordSpec] = {}
    for rec in records:
        key = rec.merge_key()
        if key in merged:
            merged[key] = replace(merged[key], count=merged[key].count + rec.count)
        else:
            merged[key] = rec
    return list(merged.values())


def _report_id(rep: Reporter, domain: str, begin: int, end: int, rng: random.Random) -> str:
    """Report ids in each receiver's own style (numeric, GUID, dotted...)."""
    if rep.key == "google":
        return str(rng.randrange(10**18, 10**19))
    if rep.key == "microsoft":
        return f"{rng.getrandbits(128):032x}"
    if rep.key == "yahoo":
        return f"{begin}.{rng.randrange(100000, 999999)}"
    if rep.key == "mimecast":
        h = f"{rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
    if rep.key == "legacy":
        return f"{domain}_{end}"
    if rep.key == "rfc9990":
        return f"{begin}.{rng.getrandbits(40):010x}.{domain}"
    return f"{rng.getrandbits(64):016x}"


# --------------------------------------------------------------------------- quirks and stories


def _plant_quirks(world: World) -> None:
    """Switch on the real-world oddities in a few named reports.

    Spread over low-volume reporters so the stories themselves stay clean;
    each quirk lands on exactly one report, recorded in its ``tags``.
    """
    legacy = [r for r in world.reports if r.reporter == "legacy"]
    comcast = [r for r in world.reports if r.reporter == "comcast" and "multi-day" not in r.tags]
    receiver = [r for r in world.reports if r.reporter == "rfc9990"]
    plan: list[tuple[ReportSpec | None, str]] = [
        (legacy[1] if len(legacy) > 1 else None, "xs_schema_wrapper"),
        (legacy[2] if len(legacy) > 2 else None, "capitalized_results"),
        (legacy[3] if len(legacy) > 3 else None, "cp1252_byte"),
        (legacy[4] if len(legacy) > 4 else None, "no_xml_declaration"),
        (comcast[5] if len(comcast) > 5 else None, "empty_org_name"),
        (_multi_record(comcast[8:]), "empty_reason"),
        (receiver[10] if len(receiver) > 10 else None, "no_namespace"),
    ]
    for report, quirk in plan:
        if report is None:
            continue
        report.quirks = replace(report.quirks, **{quirk: True})
        report.tags = (*report.tags, f"quirk:{quirk}")


def _multi_record(reports: list[ReportSpec]) -> ReportSpec | None:
    """First report whose first record is background noise and has company.

    parsedmarc 11.1 drops a record holding an empty ``<reason>`` (and fails
    a one-record report), so the quirk goes where losing it hides no story.
    """
    for report in reports:
        if len(report.records) > 3 and not report.records[0].label.startswith("story:"):
            return report
    return None


def _story_facts(
    world: World, label: str, domain: str
) -> tuple[tuple[str, ...], int, tuple[tuple[date, int], ...]]:
    ips: dict[str, None] = {}
    for report, rec in world.records():
        if rec.label == label and report.domain == domain:
            ips.setdefault(rec.source_ip, None)
    series = world.daily_messages(domain, label)
    daily = tuple((d, n) for d, n in sorted(series.items()) if n)
    ordered = sorted(ips, key=lambda ip: (ipaddress.ip_address(ip).version, ipaddress.ip_address(ip)))
    return tuple(ordered), sum(n for _, n in daily), daily


def _baseline(world: World, domain: str, label: str, before: date) -> tuple[float | None, float | None]:
    series = world.daily_messages(domain, label)
    weekday = [n for d, n in series.items() if d < before and d.weekday() < 5 and n]
    weekend = [n for d, n in series.items() if d < before and d.weekday() >= 5 and n]
    return (
        statistics.median(weekday) if weekday else None,
        statistics.median(weekend) if weekend else None,
    )


def _build_stories(world: World) -> list[Story]:
    stories: list[Story] = []

    def add(
        key: str,
        kind: StoryKind,
        title: str,
        domain: str,
        label: str,
        provider: str,
        networks: tuple[str, ...],
        dmarc_pass: bool,
        baseline_label: str | None,
        summary: str,
    ) -> None:
        ips, messages, daily = _story_facts(world, label, domain)
        if not daily:
            return
        first, last = daily[0][0], daily[-1][0]
        wk, we = _baseline(world, domain, baseline_label, first) if baseline_label else (None, None)
        stories.append(
            Story(
                key,
                kind,
                title,
                domain,
                label,
                provider,
                first,
                last,
                networks,
                ips,
                messages,
                daily,
                dmarc_pass,
                baseline_label,
                wk,
                we,
                summary,
            )
        )

    add(
        "m365-burst",
        "passing-abuse",
        "Burst of DMARC-passing mail through the domain's own Microsoft 365 from a new /24",
        "example.com",
        "story:m365-burst",
        "Microsoft 365",
        (f"{M365_STORY_NET}.0/24",),
        True,
        "m365",
        "Mail from example.com passes DMARC (DKIM d=example.com s=selector1 and SPF example.com both pass) "
        "but comes from Microsoft 365 outbound addresses in 40.107.247.0/24, a /24 the tenant never used "
        "before, at several times the usual Microsoft 365 volume and aimed at consumer mailboxes "
        "(Gmail, Yahoo): the signature of a compromised tenant or mailbox sending phishing.",
    )
    add(
        "spoof-burst",
        "spoofing",
        "Spoofing burst failing DMARC from VPS addresses",
        "shop.example.net",
        "story:spoof-burst",
        "VPS hosters",
        tuple(f"{n}.0.0/16" if n.count(".") == 1 else f"{n}.0/24" for n in SPOOF_BURST_NETS),
        False,
        "spoof-noise",
        "Dozens of never-seen VPS addresses (DigitalOcean, Cloud.ru, IP Volume, Eons) send thousands of "
        "messages with From: shop.example.net, no valid aligned DKIM and failing SPF; receivers quarantine them.",
    )
    add(
        "ses-dkim-regression",
        "auth-regression",
        "Amazon SES DKIM for shop.example.net breaks for four days",
        "shop.example.net",
        "story:ses-dkim-regression",
        "Amazon SES",
        tuple(f"{n}.0/24" for n in SES_V4),
        False,
        "ses",
        "Order mail from Amazon SES keeps its usual volume and addresses, but the shop.example.net DKIM "
        "signature fails (the selector's CNAME was removed); SPF only aligns with amazonses.com, so DMARC "
        "fails and receivers quarantine legitimate mail until the record is restored.",
    )
    add(
        "mailchimp-onboarding",
        "new-sender",
        "New legitimate ESP: Mailchimp newsletters for example.org",
        "example.org",
        "story:mailchimp-onboarding",
        "Mailchimp",
        tuple(f"{n}.0/24" for n in MAILCHIMP_V4),
        True,
        None,
        "From a Tuesday on, example.org sends a weekly newsletter (and a few automated mails daily) through "
        "Mailchimp with aligned DKIM (d=example.org s=k1); SPF aligns only with mcsv.net. A new, legitimate, "
        "DMARC-passing sender: worth a low-severity 'new sender' notice, not an alarm.",
    )
    return stories


def build_world(
    seed: int = 7,
    days: int = 60,
    start: date = date(2026, 9, 1),
    *,
    domains: tuple[DomainSpec, ...] | None = None,
    reporters: tuple[Reporter, ...] | None = None,
    sources: tuple[Source, ...] | None = None,
    quirks: bool = True,
) -> World:
    """Simulate ``days`` days from ``start`` and return reports plus stories.

    Stories are placed proportionally to ``days``; with fewer than about
    three weeks some of them fall outside the window (or have too little
    baseline to mean much) and are simply absent from ``.stories``. Pass
    ``quirks=False`` for a world whose reports are all well-formed (for tests
    that compare parsed output with the ledger record by record).
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    world = World(
        seed=seed,
        start=start,
        days=days,
        domains=domains or default_domains(),
        sources=sources or default_sources(seed, start, days),
        reporters=reporters or default_reporters(),
    )
    sim = _Simulator(world)
    for day in range(days):
        for src in world.sources:
            sim.run_source(src, day)
    sim.build_reports()
    if quirks:
        _plant_quirks(world)
    world.stories = _build_stories(world)
    return world
