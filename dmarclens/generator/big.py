"""Benchmark inputs: one huge report, or many small ones.

Big receivers send reports with tens of thousands of records (tens of MB of
XML); a mailbox holds thousands of small ones. Both shapes stress different
parts of ingest (per-record cost vs per-file overhead), so both are here.
The big report goes through the same string-joining renderer as every other
report (no DOM): 50,000 records take about a second.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from .spec import DkimAuth, PolicySpec, RecordSpec, ReportFormat, ReportSpec, SpfAuth
from .world import default_domains, default_reporters
from .wrappers import FileKind, report_file
from .xmlgen import render_report

# Outbound ranges of large senders: distinct addresses are drawn from their
# union, so enrichment sees realistic owners even in a benchmark.
_BIG_NETS = (
    "52.100.0.0/14",  # Microsoft 365
    "40.107.0.0/16",  # Microsoft 365
    "209.85.128.0/17",  # Google
    "167.89.0.0/17",  # SendGrid
    "149.72.0.0/16",  # SendGrid
    "198.2.128.0/18",  # Mailchimp
    "54.240.0.0/18",  # Amazon SES
)


def _distinct_ips(n: int, rng: random.Random) -> list[str]:
    nets = [ipaddress.ip_network(n_) for n_ in _BIG_NETS]
    sizes = [net.num_addresses for net in nets]
    capacity = sum(sizes)
    if n > capacity:
        raise ValueError(f"n_ips={n} exceeds the {capacity} addresses available")
    out: list[str] = []
    starts = [int(net.network_address) for net in nets]
    for index in rng.sample(range(capacity), n):
        for start, size in zip(starts, sizes, strict=True):
            if index < size:
                out.append(str(ipaddress.IPv4Address(start + index)))
                break
            index -= size
    return out


_VARIANTS: tuple[tuple[str, str, str, tuple[DkimAuth, ...], tuple[SpfAuth, ...]], ...] = (
    ("none", "pass", "pass", (DkimAuth("example.com", "selector1"),), (SpfAuth("example.com"),)),
    (
        "none",
        "pass",
        "fail",
        (DkimAuth("example.com", "s1"), DkimAuth("sendgrid.info", "smtpapi")),
        (SpfAuth("sendgrid.net"),),
    ),
    ("none", "fail", "pass", (), (SpfAuth("example.com"),)),
    (
        "reject",
        "fail",
        "fail",
        (DkimAuth("example.com", "selector1", "fail"),),
        (SpfAuth("example.com", "softfail"),),
    ),
    ("reject", "fail", "fail", (), (SpfAuth("bulk7.test", "none"),)),
)


def big_report_xml(n_records: int, n_ips: int, *, seed: int = 1, fmt: ReportFormat = "rfc7489") -> bytes:
    """One report with exactly ``n_records`` records from ``n_ips`` distinct IPs.

    The first ``n_ips`` records use each address once; the remaining records
    reuse addresses with a different auth outcome, as real reports do when
    one IP sends several kinds of mail. Records are never identical, so a
    parser that merges duplicates would be caught by the count.
    """
    if not 0 < n_ips <= n_records:
        raise ValueError("need 0 < n_ips <= n_records")
    if n_records > n_ips * len(_VARIANTS):
        raise ValueError(f"at most {len(_VARIANTS)} records per IP")
    rng = random.Random(f"big|{seed}|{n_records}|{n_ips}")
    ips = _distinct_ips(n_ips, rng)
    begin = int(datetime(2026, 9, 1, tzinfo=UTC).timestamp())
    head = ReportSpec(
        org_name="google.com",
        email="noreply-dmarc-support@google.com",
        report_id=f"big-{seed}-{n_records}-{n_ips}",
        begin=begin,
        end=begin + 86399,
        policy=PolicySpec(
            "example.com",
            p="reject",
            sp="reject",
            pct=100,
            np="reject" if fmt == "rfc9990" else None,
            testing="n" if fmt == "rfc9990" else None,
            discovery_method="psl" if fmt == "rfc9990" else None,
        ),
        records=[],
        receiver="google.com",
        fmt=fmt,
        generator="dmarclens big_report_xml" if fmt == "rfc9990" else None,
    )
    variant_of = [rng.randrange(len(_VARIANTS)) for _ in range(n_ips)]
    uses = [0] * n_ips
    records: list[RecordSpec] = []
    for i in range(n_records):
        ip_index = i if i < n_ips else rng.randrange(n_ips)
        # A reused address takes the next variant it has not had yet, so no
        # two records are identical (at most len(_VARIANTS) per address).
        while uses[ip_index] >= len(_VARIANTS):
            ip_index = (ip_index + 1) % n_ips
        variant = _VARIANTS[(variant_of[ip_index] + uses[ip_index]) % len(_VARIANTS)]
        uses[ip_index] += 1
        disposition, dkim_eval, spf_eval, dkim, spf = variant
        if fmt == "rfc9990" and disposition == "none":
            disposition = "pass"
        records.append(
            RecordSpec(
                source_ip=ips[ip_index],
                count=1 + int(rng.expovariate(0.05)),
                header_from="example.com",
                disposition=disposition,
                dkim_eval=dkim_eval,
                spf_eval=spf_eval,
                envelope_from=spf[0].domain,
                dkim=dkim,
                spf=spf,
            )
        )
    head.records = records
    return render_report(head)


def many_small_reports(n: int, *, seed: int) -> Iterator[tuple[str, bytes]]:
    """``n`` small daily reports as ``(file name, bytes)``: .xml.gz, .zip and .xml.

    Report ids, days and reporters vary so every item is a distinct report;
    a store that deduplicates must keep all ``n``.
    """
    rng = random.Random(f"small|{seed}")
    domains = default_domains()
    reporters = [r for r in default_reporters() if r.period_days == 1]
    kinds: dict[str, FileKind] = {"google": "zip", "microsoft": "xml.gz", "rfc9990": "xml"}
    # Days cycle through 1,000 days from 2023 so any n stays in the past (a store
    # rightly refuses reports from the future); report ids keep every item distinct.
    start = date(2023, 1, 1)
    for i in range(n):
        rep = reporters[i % len(reporters)]
        dom = domains[(i // len(reporters)) % len(domains)]
        day = start + timedelta(days=(i // (len(reporters) * len(domains))) % 1000)
        begin = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        records = [
            RecordSpec(
                source_ip=f"{rng.choice(('40.107.22', '209.85.218', '167.89.54', '54.240.9'))}.{rng.randint(2, 254)}",
                count=rng.randint(1, 400),
                header_from=dom.name,
                envelope_from=dom.name,
                dkim=(DkimAuth(dom.name, "selector1"),),
                spf=(SpfAuth(dom.name),),
            )
            for _ in range(rng.randint(1, 20))
        ]
        spec = ReportSpec(
            org_name=rep.org_name,
            email=rep.email,
            report_id=f"small-{seed}-{i}",
            begin=begin,
            end=begin + 86400 - (1 if rep.end_inclusive else 0),
            policy=dom.policy
            if rep.fmt != "rfc9990"
            else PolicySpec(
                dom.name, p=dom.policy.p, pct=None, np=dom.policy.p, testing="n", discovery_method="psl"
            ),
            records=records,
            receiver=rep.receiver,
            fmt=rep.fmt,
            version=rep.version,
            generator=rep.generator,
            reporter=rep.key,
        )
        kind = kinds.get(rep.key, "xml.gz")
        yield report_file(spec, render_report(spec), kind, unique_id=spec.report_id)
