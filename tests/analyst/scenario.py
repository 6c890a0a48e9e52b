"""One small, exactly known world for the analyst tests.

35 days of reports (2025-02-25 .. 2025-03-31) for three policy domains, with
one story per hunting query. Every number a test asserts can be worked out
by hand from the constants below; the comments next to each sender say which
saved query must find it (and which must not).

IPs are documentation addresses, so the bundled IP database knows nothing
about them; ``IP_FACTS`` gives each one the service/country/ASN the story
needs, written into ``ip_info`` after ingest (what ``dmarclens enrich`` or
the offline lookup would have filled in for real addresses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from dmarclens.generator.spec import (
    DkimAuth,
    OverrideReason,
    PolicySpec,
    RecordSpec,
    ReportSpec,
    SpfAuth,
)

DAYS = 35
D0 = date(2025, 2, 25)
AS_OF = D0 + timedelta(days=DAYS - 1)  # 2025-03-31, the newest day in the data


def day(i: int) -> date:
    return D0 + timedelta(days=i)


# ip -> (service_name, service_type, asn, as_name, country)
IP_FACTS: dict[str, tuple[str | None, str | None, int | None, str | None, str | None]] = {
    "198.51.100.10": ("Microsoft 365", "Email Provider", 8075, "MICROSOFT-CORP", "US"),
    "198.51.100.77": ("Microsoft 365", "Email Provider", 8075, "MICROSOFT-CORP", "IE"),
    "203.0.113.20": ("SendGrid", "Marketing", 11377, "SENDGRID", "US"),
    "198.51.100.200": (None, None, 64500, "EXAMPLE-CORP", "US"),
    "192.0.2.50": (None, None, 64501, "BAD-HOSTING", "RU"),
    "192.0.2.60": (None, None, 64502, "CHEAP-VPS", "CN"),
    "192.0.2.80": ("Google", "Email Provider", 15169, "GOOGLE", "DE"),
    "192.0.2.90": (None, None, 64503, "BULLETPROOF", "NL"),
}

M365 = "198.51.100.10"  # example.com's own Microsoft 365: steady, spikes on AS_OF
M365_NEW = "198.51.100.77"  # a new Microsoft 365 tenant, from day 30, aligned DKIM with a new selector
SENDGRID = "203.0.113.20"  # partner ESP: SPF-only pass, DKIM signed by sendgrid.net
ONPREM = "198.51.100.200"  # own relay: SPF-only pass but not a multi-tenant provider
SPOOF_RU = "192.0.2.50"  # fails DMARC daily (example.com 5/day, example.net 2/day rejected)
SPOOF_CN = "192.0.2.60"  # fails DMARC, only Yahoo sees it (days 0..27)
FORWARDER = "192.0.2.80"  # forwarded copies: fail with override reason "forwarded"
LOOKALIKE = "192.0.2.90"  # envelope-from examp1e.com days 33..34 (7/day), 3xarnp1e.com day 34 (2); fails

M365_SPIKE = 1000
YAHOO_LAST = 27  # Yahoo stops reporting after day 27
QUIET_LAST = 20  # quiet.example gets no reports after day 20
NEW_TENANT_FROM = 30
SUBDOMAIN_FROM = 31
LOOKALIKE_FROM = 33


def m365_google(i: int) -> int:
    """Google's count for the M365 source on day i: 100/105/110, then the spike."""
    return M365_SPIKE if i == DAYS - 1 else 100 + (i % 3) * 5


def _aligned(ip: str, count: int, header_from: str = "example.com", selector: str = "selector1",
             label: str = "") -> RecordSpec:
    return RecordSpec(
        source_ip=ip, count=count, header_from=header_from, envelope_from="example.com",
        dkim=(DkimAuth("example.com", selector, "pass"),), spf=(SpfAuth("example.com", "pass"),),
        label=label,
    )


def _fail(ip: str, count: int, *, domain: str = "example.com", envelope_from: str = "spoof.invalid",
          disposition: str = "none", reasons: tuple[OverrideReason, ...] = (),
          dkim: tuple[DkimAuth, ...] = ()) -> RecordSpec:
    return RecordSpec(
        source_ip=ip, count=count, header_from=domain, disposition=disposition,
        dkim_eval="fail", spf_eval="fail", envelope_from=envelope_from, dkim=dkim,
        spf=(SpfAuth(envelope_from, "pass" if envelope_from != "spoof.invalid" else "fail"),),
        reasons=reasons,
    )


def _google_example_com(i: int) -> list[RecordSpec]:
    recs = [
        _aligned(M365, m365_google(i)),
        RecordSpec(  # SPF aligned through a SendGrid bounce domain; DKIM is SendGrid's own
            source_ip=SENDGRID, count=40, header_from="example.com", dkim_eval="fail", spf_eval="pass",
            envelope_from="em123.example.com",
            dkim=(DkimAuth("sendgrid.net", "smtpapi", "pass"),),
            spf=(SpfAuth("em123.example.com", "pass"),),
        ),
        RecordSpec(  # the company's own relay: SPF only, but nobody else can use it
            source_ip=ONPREM, count=15, header_from="example.com", dkim_eval="fail", spf_eval="pass",
            envelope_from="example.com", spf=(SpfAuth("example.com", "pass"),),
        ),
        _fail(SPOOF_RU, 5),
    ]
    if i >= NEW_TENANT_FROM:
        recs.append(_aligned(M365_NEW, 20, selector="selector2"))
    if i >= SUBDOMAIN_FROM:
        recs.append(_aligned(M365, 8, header_from="news.example.com"))
    if i >= LOOKALIKE_FROM:
        recs.append(_fail(LOOKALIKE, 7, envelope_from="examp1e.com"))
    if i == DAYS - 1:  # edit distance 4, caught only by the homoglyph fold (3→e, 1→l, rn→m)
        recs.append(_fail(LOOKALIKE, 2, envelope_from="3xarnp1e.com"))
    return recs


def _microsoft_example_com(i: int) -> list[RecordSpec]:
    return [
        _aligned(M365, 20),
        _fail(FORWARDER, 10, envelope_from="lists.example.org",
              reasons=(OverrideReason("forwarded", "arc=pass"),),
              dkim=(DkimAuth("example.com", "selector1", "fail"),)),
    ]


def _yahoo_example_com(i: int) -> list[RecordSpec]:
    return [_aligned(M365, 10), _fail(SPOOF_CN, 3)]


def _google_example_net(i: int) -> list[RecordSpec]:
    return [
        RecordSpec(
            source_ip=M365, count=30, header_from="example.net", envelope_from="example.net",
            dkim=(DkimAuth("example.net", "selector1", "pass"),), spf=(SpfAuth("example.net", "pass"),),
        ),
        _fail(SPOOF_RU, 2, domain="example.net", disposition="reject"),
    ]


def _google_quiet(i: int) -> list[RecordSpec]:
    return [
        RecordSpec(
            source_ip=M365, count=5, header_from="quiet.example", envelope_from="quiet.example",
            dkim=(DkimAuth("quiet.example", "selector1", "pass"),), spf=(SpfAuth("quiet.example", "pass"),),
        )
    ]


@dataclass(frozen=True)
class Feed:
    """One reporter's daily report for one domain."""

    org: str
    email: str
    domain: str
    p: str
    records: Callable[[int], list[RecordSpec]]
    last_day: int = DAYS - 1


FEEDS = (
    Feed("google.com", "noreply-dmarc-support@google.com", "example.com", "none", _google_example_com),
    Feed("Enterprise Outlook", "dmarcreport@microsoft.com", "example.com", "none", _microsoft_example_com),
    Feed("Yahoo", "dmarc_support@yahoo.com", "example.com", "none", _yahoo_example_com, YAHOO_LAST),
    Feed("google.com", "noreply-dmarc-support@google.com", "example.net", "reject", _google_example_net),
    Feed("google.com", "noreply-dmarc-support@google.com", "quiet.example", "none", _google_quiet, QUIET_LAST),
)


def report_specs() -> list[ReportSpec]:
    """Every report of the world: one per feed and day, each covering one UTC day."""
    specs = []
    for feed in FEEDS:
        for i in range(feed.last_day + 1):
            begin = int(datetime.combine(day(i), datetime.min.time(), tzinfo=UTC).timestamp())
            specs.append(ReportSpec(
                org_name=feed.org, email=feed.email, report_id=f"{feed.domain}-{feed.org}-{i}".replace(" ", "_"),
                begin=begin, end=begin + 86399, policy=PolicySpec(domain=feed.domain, p=feed.p),
                records=feed.records(i), receiver=feed.email.split("@")[1],
            ))
    return specs
