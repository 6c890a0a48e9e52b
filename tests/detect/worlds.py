"""The generated world the detection tests run on: one domain per situation.

Each *positive* domain holds one planted event that a given anomaly kind
must report; each *negative* domain holds the legitimate look-alike of such
an event (rotation, forwarding, newsletters, a short pause, a tiny receiver)
that must not raise an alert. Reports come from the project's generator
(``dmarclens.generator.build_world``) with three receivers and are ingested
through the real pipeline by ``conftest.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date, timedelta

from dmarclens.generator import DkimAuth
from dmarclens.generator.scenarios import (
    SENDGRID_V4,
    Delivery,
    deliver,
    domain_spec,
    forwarder,
    gws,
    host_in,
    m365,
    mailchimp,
    mailing_list,
    merge_days,
    own_mta,
    reporters_for,
    sendgrid,
    ses,
    spoof_noise,
)
from dmarclens.generator.world import (
    GOOGLE_GROUPS_V4,
    M365_BASELINE_V4,
    SPOOF_BURST_NETS,
    STEADY,
    Source,
    build_world,
)

START = date(2026, 3, 2)  # a Monday
DAYS = 40
REPORTERS = ("google", "microsoft", "yahoo")
NEW_NET = "40.107.247"
NEW_RECIPIENTS = tuple(f"partner{i}.example" for i in range(12))


def day(i: int) -> date:
    return START + timedelta(days=i)


@dataclass(frozen=True)
class Case:
    """One domain: the kind it is about, positive (must report) or negative (must stay quiet)."""

    domain: str
    kind: str
    positive: bool
    start: int  # day index the event starts
    note: str


CASES: tuple[Case, ...] = (
    Case("seed.example", "new_ip_range_in_authorized_provider", True, 33,
         "own Microsoft 365 sends far more than usual from a never-seen /24 (Saturday)"),
    Case("burst.example", "volume_spike", True, 30, "authorized SendGrid suddenly sends 6x its usual passing mail"),
    Case("spoof.example", "spoofing_burst", True, 30, "thousands of forged messages from VPS addresses"),
    Case("regress.example", "auth_regression", True, 29, "Amazon SES DKIM for the domain breaks for 4 days"),
    Case("newesp.example", "new_source", True, 30, "SendGrid starts sending passing mail"),
    Case("envfrom.example", "new_identifier", True, 31, "own Microsoft 365 ranges, a new envelope-from, extra mail"),
    Case("audience.example", "audience_shift", True, 31, "Yahoo suddenly reports Microsoft 365 mail it never saw"),
    Case("dormant.example", "dormant_source_revived", True, 37, "own MTA silent for a month, then sends again"),
    Case("lookalike.example", "lookalike_identifier", True, 30, "envelope-from lookaiike.example"),
    Case("rotate.example", "new_ip_range_in_authorized_provider", False, 28,
         "Microsoft 365 moves mail to a new /24, no extra volume"),
    Case("steady.example", "volume_spike", False, 28, "weekly newsletter through Mailchimp, duplicates, re-sends"),
    Case("noisy.example", "spoofing_burst", False, 24, "background forgery with small waves"),
    Case("forward.example", "auth_regression", False, 26, "heavy forwarding and a Google Group start"),
    Case("forward.example", "new_source", False, 26, "heavy forwarding and a Google Group start"),
    Case("keyrot.example", "new_identifier", False, 30, "DKIM key rotation selector1 -> selector2"),
    Case("smallrx.example", "audience_shift", False, 31, "a receiver reports a handful of messages"),
    Case("pause.example", "dormant_source_revived", False, 30, "own MTA pauses for ten days"),
    Case("brand.example", "lookalike_identifier", False, 0, "ESP bounce domains and own subdomains"),
)


def sources() -> tuple[Source, ...]:
    hosts = tuple(f"{NEW_NET}.{h}" for h in (11, 23, 37, 58, 77, 91, 104, 130, 151, 188))
    rng = random.Random("detect-tests")
    burst = tuple(host_in(SPOOF_BURST_NETS[i % 6], rng) for i in range(30))
    consumer = (("google", 0.6), ("yahoo", 0.25), ("microsoft", 0.15))
    return (
        # ---- positives
        m365("seed.example", 1800), sendgrid("seed.example", 300), spoof_noise("seed.example", 20),
        m365("seed.example", 3000, label="story:seed", nets=hosts, rhythm=STEADY, first=33,
             shape=(0.6, 1.0, 1.0, 0.8), share=consumer),
        sendgrid("burst.example", 400), gws("burst.example", 200), spoof_noise("burst.example", 15),
        sendgrid("burst.example", 2000, label="story:burst", first=30, shape=(1.0, 0.9)),
        gws("spoof.example", 300), spoof_noise("spoof.example", 15),
        Source("story:spoof", "spoof.example", "VPS hosters", "spoof", 2500, STEADY, ipv4=burst,
               ips_per_report=10, first=30, shape=(0.7, 1.0, 0.5)),
        ses("regress.example", 900, broken_dkim=(29, 32), broken_label="story:regress"),
        gws("regress.example", 120), spoof_noise("regress.example", 20),
        gws("newesp.example", 300), spoof_noise("newesp.example", 10),
        sendgrid("newesp.example", 250, label="story:newesp", first=30),
        m365("envfrom.example", 1500), spoof_noise("envfrom.example", 15),
        m365("envfrom.example", 1400, label="story:envfrom", env="notify.envfrom.example", rhythm=STEADY,
             first=31, shape=(1.0, 1.0, 1.0), share=consumer),
        m365("audience.example", 1500, share=(("google", 0.55), ("microsoft", 0.45))),
        ses("audience.example", 500), spoof_noise("audience.example", 15),
        m365("audience.example", 600, label="story:audience", rhythm=STEADY, first=31, shape=(1.0, 1.0, 1.0),
             share=(("yahoo", 1.0),)),
        gws("dormant.example", 300), spoof_noise("dormant.example", 10),
        own_mta("dormant.example", 120, last=5), own_mta("dormant.example", 300, label="story:dormant", first=37),
        gws("lookalike.example", 300), spoof_noise("lookalike.example", 10),
        Source("story:lookalike", "lookalike.example", "lookalike sender", "aligned", 150, STEADY,
               ipv4=("45.155.205.77", "45.155.205.78"), ips_per_report=2, envelope_from="lookaiike.example",
               dkim=(DkimAuth("lookaiike.example", "default"),), first=30),
        # ---- negatives
        m365("rotate.example", 1800, last=27),
        m365("rotate.example", 1800, nets=(*M365_BASELINE_V4[1:], "40.107.212"), first=28),
        spoof_noise("rotate.example", 15),
        gws("steady.example", 300), mailchimp("steady.example", 30, weekly_peak=(1, 1500.0)),
        spoof_noise("steady.example", 15),
        gws("noisy.example", 300), spoof_noise("noisy.example", 40),
        spoof_noise("noisy.example", 60, label="spoof-wave", first=24, shape=(1.0, 1.5, 0.6)),
        m365("forward.example", 1500), gws("forward.example", 60), spoof_noise("forward.example", 15),
        forwarder("forward.example", 1200, label="fwd", first=26),
        mailing_list("forward.example", 300, label="list", first=28),
        mailing_list("forward.example", 120, selector="google", ips=GOOGLE_GROUPS_V4, list_domain="googlegroups.com",
                     label="ggroup", first=26),
        m365("keyrot.example", 1600, last=29), m365("keyrot.example", 1600, selector="selector2", first=30),
        spoof_noise("keyrot.example", 15),
        m365("smallrx.example", 1500, share=(("google", 0.55), ("microsoft", 0.45))),
        ses("smallrx.example", 500), spoof_noise("smallrx.example", 15),
        m365("smallrx.example", 6, label="story:smallrx", rhythm=STEADY, first=31, share=(("yahoo", 1.0),)),
        gws("pause.example", 300), own_mta("pause.example", 120, last=19), own_mta("pause.example", 120, first=30),
        spoof_noise("pause.example", 10),
        gws("brand.example", 300), ses("brand.example", 400), mailchimp("brand.example", 40),
        Source("sub", "brand.example", "SendGrid", "aligned", 80, STEADY, ipv4=SENDGRID_V4, ips_per_report=2,
               envelope_from="bounce.mail.brand.example", dkim=(DkimAuth("mail.brand.example", "s1"),),
               as_domain="sendgrid.com", v6_reporters=()),
        spoof_noise("brand.example", 10),
    )


def build() -> tuple[list[Delivery], list[Case]]:
    """All deliveries of the test world (arrival times included) and the cases."""
    names = sorted({c.domain for c in CASES})
    profiles = {d: "b2b" for d in names}
    profiles.update({"spoof.example": "nonprofit", "newesp.example": "nonprofit", "regress.example": "shop"})
    doms = tuple(domain_spec(d, "none" if d in ("spoof.example", "newesp.example") else "quarantine")
                 for d in names)
    # envelope_to: the seed's Microsoft-style receiver lists the usual recipients
    reps = reporters_for(profiles, REPORTERS)
    world = build_world(5, DAYS, START, domains=doms, reporters=reps, sources=sources(), quirks=False)
    reports = merge_days(list(world.reports), "yahoo", "steady.example", 20, 3, START)
    reports = merge_days(reports, "google", "steady.example", 27, 2, START)
    # audience: the planted recipients burst for envelopes of one story
    reports = [_recipients(r) for r in reports]
    deliveries = deliver(
        reports, reps, 5, start=START,
        duplicates=[("google", "steady.example", 25), ("microsoft", "steady.example", 31)],
        resend_new_id=[("google", "steady.example", 33), ("microsoft", "steady.example", 34)],
        late={("microsoft", "steady.example"): (29, 32, 72)},
    )
    return deliveries, list(CASES)


def _recipients(report):  # type: ignore[no-untyped-def]
    """Microsoft-style rows of the envfrom story go to never-seen partner domains."""
    if report.reporter != "microsoft":
        return report
    recs = []
    changed = False
    for i, rec in enumerate(report.records):
        if rec.label == "story:envfrom" and rec.envelope_to:
            rec = replace(rec, envelope_to=NEW_RECIPIENTS[i % len(NEW_RECIPIENTS)])
            changed = True
        recs.append(rec)
    return replace(report, records=recs) if changed else report
