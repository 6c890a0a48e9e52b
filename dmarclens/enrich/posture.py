"""DNS posture of the user's own domains: DMARC policy strength, SPF health,
shared-infrastructure exposure, and the DKIM keys the reports show in use.

Why dnspython and not checkdmarc: dnspython is already a dependency, and the
checks must run against a chosen nameserver *and port* (tests and air-gapped
sites use a local server), within one timeout per lookup, concurrently with
the same client as ``dmarclens enrich``. checkdmarc would add a second DNS
stack (plus requests, pyleri, timeout-decorator ...) whose nameserver option
has no port, and it answers questions we do not ask (MX/TLS/BIMI) while not
answering the one we care most about: which SPF includes hand the domain to
a multi-tenant platform, and whether the reports show that platform in use.

The flow mirrors enrichment: read what the reports say (selectors, SPF
passes per platform) and close the database; ask DNS; write one transaction.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmarclens.enrich.rdns import DEFAULT_TIMEOUT, DnsClient

if TYPE_CHECKING:
    import dns.message
    import duckdb

log = logging.getLogger(__name__)

SPF_LOOKUP_LIMIT = 10
SPF_VOID_LIMIT = 2
MAX_INCLUDE_DEPTH = 10
MAX_SELECTORS = 25
DEFAULT_UNUSED_DAYS = 30
DNS_FAILURES = ("timeout", "servfail", "error")


@dataclass(frozen=True)
class Platform:
    """A multi-tenant sending platform: every customer sends from the same IPs,
    so ``include:`` of its SPF lets all of them pass SPF for your domain."""

    name: str
    includes: tuple[str, ...]
    rdns: tuple[str, ...] = ()
    as_domains: tuple[str, ...] = ()


PLATFORMS: tuple[Platform, ...] = (
    Platform("Microsoft 365", ("spf.protection.outlook.com", "spf.protection.office365.us"),
             ("outlook.com", "office365.us"), ("microsoft.com",)),
    Platform("Google Workspace", ("_spf.google.com", "_netblocks.google.com", "_netblocks2.google.com",
                                  "_netblocks3.google.com"), ("google.com",), ("google.com",)),
    Platform("SendGrid", ("sendgrid.net",), ("sendgrid.net",), ("sendgrid.com", "twilio.com")),
    Platform("Mailgun", ("mailgun.org", "eu.mailgun.org"), ("mailgun.net", "mailgun.org"), ("mailgun.com",)),
    Platform("Amazon SES", ("amazonses.com",), ("amazonses.com",), ("amazon.com",)),
    Platform("Mailchimp / Mandrill", ("servers.mcsv.net", "spf.mandrillapp.com", "mandrillapp.com"),
             ("mcsv.net", "mcdlv.net", "rsgsv.net", "mandrillapp.com"), ("intuit.com", "mailchimp.com")),
    Platform("Postmark", ("spf.mtasv.net",), ("mtasv.net",)),
    Platform("SparkPost", ("sparkpostmail.com",), ("sparkpostmail.com",)),
    Platform("Brevo (Sendinblue)", ("spf.sendinblue.com", "spf.brevo.com"), ("sendinblue.com", "brevo.com")),
    Platform("Mailjet", ("spf.mailjet.com",), ("mailjet.com",)),
    Platform("Salesforce", ("_spf.salesforce.com",), ("salesforce.com",), ("salesforce.com",)),
    Platform("Salesforce Marketing Cloud", ("cust-spf.exacttarget.com",), ("exacttarget.com",)),
    Platform("Zendesk", ("mail.zendesk.com",), ("zendesk.com",)),
    Platform("HubSpot", ("hubspotemail.net",), ("hubspotemail.net",)),
    Platform("Zoho", ("zoho.com", "zohomail.com", "zcsend.net", "zoho.eu"), ("zoho.com", "zohomail.com",
                                                                             "zcsend.net", "zoho.eu")),
    Platform("Fastmail", ("spf.messagingengine.com",), ("messagingengine.com",)),
    Platform("GoDaddy", ("secureserver.net",), ("secureserver.net",), ("godaddy.com",)),
    Platform("Mimecast", ("_netblocks.mimecast.com",), ("mimecast.com",)),
    Platform("Proofpoint", ("pphosted.com", "spf.ppe-hosted.com"), ("pphosted.com", "ppe-hosted.com")),
    Platform("Constant Contact", ("spf.constantcontact.com",), ("constantcontact.com",)),
    Platform("Elastic Email", ("_spf.elasticemail.com",), ("elasticemail.com",)),
    Platform("MailerLite", ("_spf.mlsend.com",), ("mlsend.com",)),
    Platform("MailChannels", ("relay.mailchannels.net",), ("mailchannels.net",)),
    Platform("Freshdesk", ("email.freshdesk.com",), ("freshdesk.com",)),
)
"""Known multi-tenant platforms, matched on the include name (equal or a
subdomain: HubSpot and others give each customer its own include under a
shared parent). ``rdns``/``as_domains`` tell which reported IPs are theirs."""


def platform_for_include(include: str) -> Platform | None:
    name = include.lower().rstrip(".")
    for p in PLATFORMS:
        if any(name == s or name.endswith("." + s) for s in p.includes):
            return p
    return None


def platform_for_source(base_domain: str | None, as_domain: str | None) -> Platform | None:
    """The platform a reported IP belongs to, from its PTR base domain or AS domain."""
    bd = (base_domain or "").lower()
    ad = (as_domain or "").lower()
    for p in PLATFORMS:
        if bd and bd in p.rdns:
            return p
    for p in PLATFORMS:
        if ad and ad in p.as_domains:
            return p
    return None


# --- results -----------------------------------------------------------------


@dataclass
class DmarcPolicy:
    status: str  # ok, missing, invalid, timeout, servfail, error
    record: str | None = None
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def p(self) -> str | None:
        return self.tags.get("p")

    @property
    def sp(self) -> str | None:
        return self.tags.get("sp")

    @property
    def np(self) -> str | None:
        return self.tags.get("np")

    @property
    def pct(self) -> int | None:
        try:
            return int(self.tags["pct"]) if "pct" in self.tags else None
        except ValueError:
            return None

    @property
    def rua(self) -> list[str]:
        return _uris(self.tags.get("rua"))

    @property
    def ruf(self) -> list[str]:
        return _uris(self.tags.get("ruf"))

    @property
    def strength(self) -> str:
        """missing, monitor, partial or enforced (see docs/identity.md); unknown when DNS failed."""
        if self.status in DNS_FAILURES:
            return "unknown"
        if self.status != "ok" or self.p not in ("none", "quarantine", "reject"):
            return "missing"
        if self.p == "none":
            return "monitor"
        sp = self.sp or self.p
        np_ = self.np or sp
        pct = self.pct if self.pct is not None else 100
        testing = self.tags.get("t", "n").lower() == "y"
        if pct < 100 or sp == "none" or np_ == "none" or testing:
            return "partial"
        return "enforced"


@dataclass
class SpfInclude:
    include: str
    parent: str
    depth: int
    status: str = "ok"
    platform: str | None = None
    messages: int | None = None
    last_seen: date | None = None
    unused: bool | None = None

    @property
    def multi_tenant(self) -> bool:
        return self.platform is not None


@dataclass
class SpfResult:
    status: str  # ok, missing, permerror, timeout, servfail, error
    record: str | None = None
    lookups: int = 0
    void_lookups: int = 0
    all: str | None = None
    includes: list[SpfInclude] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class DkimKey:
    selector: str
    status: str  # ok, weak, revoked, missing, invalid, timeout, servfail, error
    key_type: str | None = None
    key_bits: int | None = None
    record: str | None = None
    messages: int | None = None
    last_seen: date | None = None


@dataclass
class Posture:
    domain: str
    checked_at: datetime
    dmarc: DmarcPolicy
    spf: SpfResult
    dkim: list[DkimKey]
    findings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Stable shape for ``dmarclens posture --format json``."""
        return {
            "domain": self.domain,
            "checked_at": self.checked_at.isoformat(),
            "dmarc": {
                "status": self.dmarc.status, "record": self.dmarc.record, "source": self.dmarc.source,
                "p": self.dmarc.p, "sp": self.dmarc.sp, "np": self.dmarc.np, "pct": self.dmarc.pct,
                "rua": self.dmarc.rua, "ruf": self.dmarc.ruf, "strength": self.dmarc.strength,
            },
            "spf": {
                "status": self.spf.status, "record": self.spf.record, "lookups": self.spf.lookups,
                "void_lookups": self.spf.void_lookups, "all": self.spf.all,
                "includes": [
                    {"include": i.include, "parent": i.parent, "depth": i.depth, "status": i.status,
                     "platform": i.platform, "multi_tenant": i.multi_tenant, "messages": i.messages,
                     "last_seen": i.last_seen.isoformat() if i.last_seen else None, "unused": i.unused}
                    for i in self.spf.includes
                ],
            },
            "dkim": [
                {"selector": k.selector, "status": k.status, "key_type": k.key_type, "key_bits": k.key_bits,
                 "messages": k.messages, "last_seen": k.last_seen.isoformat() if k.last_seen else None}
                for k in self.dkim
            ],
            "findings": self.findings,
        }


def _uris(value: str | None) -> list[str]:
    return [u.strip() for u in (value or "").split(",") if u.strip()]


# --- record parsing (pure) -----------------------------------------------------


DMARC_CASELESS = ("p", "sp", "np", "adkim", "aspf", "t")


def parse_tags(record: str, caseless: Iterable[str] = DMARC_CASELESS) -> dict[str, str]:
    """``v=DMARC1; p=reject; rua=mailto:a@b`` → {"v": "DMARC1", "p": "reject", ...}.

    Tag names are lower-cased; so are the values of the ``caseless`` tags
    (DMARC's policy words, which receivers compare case-insensitively). DKIM
    records pass ``caseless=("k",)``: their ``p=`` is base64 and case matters.
    """
    caseless = set(caseless)
    tags: dict[str, str] = {}
    for part in record.split(";"):
        if "=" not in part:
            continue
        key, _, value = part.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if key in caseless:
            value = value.lower()
        if key and key not in tags:
            tags[key] = value
    return tags


def _txt_strings(response: dns.message.Message | None) -> list[str]:
    import dns.rdatatype

    if response is None:
        return []
    out = []
    for rrset in response.answer:
        if rrset.rdtype != dns.rdatatype.TXT:
            continue
        for rd in rrset:
            out.append(b"".join(rd.strings).decode("utf-8", errors="replace"))
    return out


def dkim_key_facts(record: str) -> tuple[str, str | None, int | None]:
    """(status, key type, bits) of a DKIM key record."""
    tags = parse_tags(record, caseless=("k",))
    key_type = tags.get("k") or "rsa"
    p = re.sub(r"\s+", "", tags.get("p", "x" if "p" not in tags else ""))
    if "p" not in tags:
        return "invalid", key_type, None
    if p == "":
        return "revoked", key_type, None
    try:
        der = base64.b64decode(p, validate=True)
    except (ValueError, TypeError):
        return "invalid", key_type, None
    if key_type == "ed25519":
        return ("ok", key_type, 256) if len(der) == 32 else ("invalid", key_type, None)
    bits = _rsa_bits(der)
    if bits is None:
        return "invalid", key_type, None
    return ("weak" if bits < 1024 else "ok"), key_type, bits


def _rsa_bits(der: bytes) -> int | None:
    try:
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import load_der_public_key
    except ImportError:  # cryptography comes with parsedmarc; without it, report no size
        return None
    try:
        key = load_der_public_key(der)
    except (ValueError, TypeError):
        return None
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else None


def spf_terms(record: str) -> list[str]:
    return record.split()[1:]


# --- DNS checks ----------------------------------------------------------------


async def _txt(client: DnsClient, name: str) -> tuple[str, list[str]]:
    status, response = await client.query(name.rstrip(".") + ".", "TXT")
    return status, _txt_strings(response)


async def check_dmarc(client: DnsClient, domain: str) -> DmarcPolicy:
    """The DMARC record of ``domain``, falling back to its organisational domain (RFC 7489 §6.6.3)."""
    from dmarclens.enrich.lookalike import split_registrable

    names = [domain]
    parts = split_registrable(domain)
    if parts and parts[2] != domain:
        names.append(parts[2])
    last = DmarcPolicy("missing")
    for name in names:
        status, texts = await _txt(client, f"_dmarc.{name}")
        if status not in ("ok", "nxdomain"):
            return DmarcPolicy(status, source=f"_dmarc.{name}")
        found = [t for t in texts if re.match(r"^\s*v\s*=\s*DMARC1\s*(;|$)", t, re.IGNORECASE)]
        if len(found) > 1:
            return DmarcPolicy("invalid", " | ".join(found), f"_dmarc.{name}")
        if found:
            tags = parse_tags(found[0])
            ok = tags.get("p") in ("none", "quarantine", "reject")
            return DmarcPolicy("ok" if ok else "invalid", found[0], f"_dmarc.{name}", tags)
    return last


async def check_spf(client: DnsClient, domain: str) -> SpfResult:
    """Fetch the SPF record and walk its include/redirect tree, counting lookups per RFC 7208 §4.6.4."""
    status, texts = await _txt(client, domain)
    if status not in ("ok", "nxdomain"):
        return SpfResult(status)
    records = [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    if not records:
        return SpfResult("missing")
    if len(records) > 1:
        return SpfResult("permerror", " | ".join(records), problems=["more than one SPF record: SPF fails"])
    result = SpfResult("ok", records[0])
    result.all = await _walk(client, domain, records[0], 0, {domain.lower()}, result)
    if result.lookups > SPF_LOOKUP_LIMIT:
        result.status = "permerror"
    if result.void_lookups > SPF_VOID_LIMIT:
        result.status = "permerror"
    if any(i.status == "loop" for i in result.includes):
        result.status = "permerror"
    return result


_MECH = re.compile(r"^([+\-~?]?)([a-z0-9]+)([:=/].*)?$", re.IGNORECASE)


async def _walk(
    client: DnsClient, name: str, record: str, depth: int, seen: set[str], result: SpfResult
) -> str | None:
    """Count lookups of one record and recurse; return its all term (qualifier + 'all')."""
    all_term = None
    redirect = None
    children: list[tuple[str, str]] = []  # (kind, target)
    for term in spf_terms(record):
        m = _MECH.match(term)
        if not m:
            result.problems.append(f"{name}: unknown SPF term {term!r}")
            continue
        qualifier, mech, rest = m.group(1) or "+", m.group(2).lower(), (m.group(3) or "")
        if mech in ("include", "a", "mx", "ptr", "exists"):
            result.lookups += 1
            if mech == "ptr":
                result.problems.append(f"{name}: the ptr mechanism is deprecated and slow (RFC 7208 §5.5)")
            if mech == "include" and rest.startswith(":"):
                children.append(("include", rest[1:]))
        elif mech == "redirect" and rest.startswith("="):
            redirect = rest[1:]
        elif mech == "all":
            all_term = qualifier + "all"
    if redirect and all_term is None:
        result.lookups += 1
        children.append(("redirect", redirect))
    for _kind, target in children:
        target = target.lower().rstrip(".")
        inc = SpfInclude(target, name, depth + 1)
        p = platform_for_include(target)
        inc.platform = p.name if p else None
        result.includes.append(inc)
        if "%" in target:
            inc.status = "macro"
            continue
        if target in seen:
            inc.status = "loop"
            continue
        if depth + 1 >= MAX_INCLUDE_DEPTH:
            inc.status = "too_deep"
            continue
        status, texts = await _txt(client, target)
        sub = [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
        if status == "nxdomain" or (status == "ok" and not sub):
            result.void_lookups += 1
            inc.status = "missing"
            continue
        if status != "ok":
            inc.status = status
            continue
        child_all = await _walk(client, target, sub[0], depth + 1, seen | {target}, result)
        if _kind == "redirect":
            all_term = child_all
    return all_term


async def check_dkim(client: DnsClient, domain: str, selectors: Iterable[str]) -> list[DkimKey]:
    async def one(sel: str) -> DkimKey:
        status, texts = await _txt(client, f"{sel}._domainkey.{domain}")
        if status == "nxdomain" or (status == "ok" and not texts):
            return DkimKey(sel, "missing")
        if status != "ok":
            return DkimKey(sel, status)
        record = next((t for t in texts if "p=" in t.replace(" ", "")), texts[0])
        st, kt, bits = dkim_key_facts(record)
        shown = re.sub(r"(p=)([A-Za-z0-9+/=]{24})[A-Za-z0-9+/=\s]+", r"\1\2…", record)
        return DkimKey(sel, st, kt, bits, shown)

    return list(await asyncio.gather(*(one(s) for s in selectors)))


def findings_for(p: Posture) -> list[str]:
    """Plain-language problems, most serious first."""
    out: list[str] = []
    d = p.dmarc
    if d.status == "missing":
        out.append(f"no DMARC record at _dmarc.{p.domain}: receivers apply no policy and send no reports")
    elif d.status == "invalid":
        out.append(f"DMARC record at {d.source} is invalid (several records or no valid p=): receivers ignore it")
    elif d.status != "ok":
        out.append(f"DMARC record could not be read ({d.status})")
    else:
        if d.p == "none":
            out.append("p=none: mail failing DMARC is delivered; the policy only monitors")
        if d.pct is not None and d.pct < 100 and d.p != "none":
            out.append(f"pct={d.pct}: the policy applies to only {d.pct}% of failing mail")
        if d.sp == "none" and d.p != "none":
            out.append("sp=none: subdomains are not protected")
        if d.np == "none" and d.p != "none":
            out.append("np=none: non-existent subdomains can be spoofed freely")
        if d.tags.get("t", "").lower() == "y":
            out.append("t=y: the policy is in testing mode")
        if not d.rua:
            out.append("no rua=: nobody receives aggregate reports for this domain")
        if d.source and d.source != f"_dmarc.{p.domain}":
            out.append(f"no DMARC record of its own; the policy is inherited from {d.source}")
    s = p.spf
    if s.status == "missing":
        out.append("no SPF record: any server may claim this domain in the envelope")
    elif s.status not in ("ok", "permerror"):
        out.append(f"SPF record could not be read ({s.status})")
    if s.lookups > SPF_LOOKUP_LIMIT:
        out.append(f"SPF needs {s.lookups} DNS lookups; receivers stop at {SPF_LOOKUP_LIMIT} and SPF fails (permerror)")
    if s.void_lookups > SPF_VOID_LIMIT:
        out.append(f"SPF has {s.void_lookups} includes that do not exist; over {SPF_VOID_LIMIT} fails SPF")
    if s.all == "+all":
        out.append("SPF ends in +all: every server on the internet passes SPF for this domain")
    elif s.all == "?all":
        out.append("SPF ends in ?all (neutral): SPF never fails for this domain")
    elif s.status == "ok" and s.all is None:
        out.append("SPF has no all term: unlisted servers get a neutral result")
    for inc in s.includes:
        if inc.status in ("missing", "loop"):
            out.append(f"SPF include {inc.include} ({inc.parent}): {inc.status}")
    for inc in s.includes:
        if inc.multi_tenant and inc.unused:
            out.append(f"SPF authorizes {inc.platform} ({inc.include}) but the reports show no mail passing "
                       "SPF through it: every customer of that platform can pass SPF as this domain; remove it")
    shared = sorted({i.platform for i in s.includes if i.multi_tenant and not i.unused and i.platform})
    if shared:
        out.append("SPF authorizes shared platforms (any of their customers passes SPF for this domain): "
                   + ", ".join(shared))
    out.extend(s.problems)
    for k in p.dkim:
        if k.status in ("missing", "revoked", "weak", "invalid"):
            extra = f" ({k.key_bits}-bit key)" if k.status == "weak" else ""
            out.append(f"DKIM selector {k.selector}._domainkey.{p.domain}: {k.status}{extra}, "
                       "yet receivers reported mail signed with it")
    return out


async def check_domain(
    client: DnsClient, domain: str, selectors: Sequence[str] = ()
) -> Posture:
    """DMARC, SPF and DKIM of one domain; usage figures are filled in by ``apply_usage``."""
    domain = domain.strip().lower().rstrip(".")
    dmarc, spf, dkim = await asyncio.gather(
        check_dmarc(client, domain), check_spf(client, domain), check_dkim(client, domain, selectors)
    )
    return Posture(domain, datetime.now(UTC), dmarc, spf, dkim)


def check_domains(
    domains: Sequence[str],
    selectors: Mapping[str, Sequence[str]] | None = None,
    *,
    nameservers: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Posture]:
    """Blocking entry point: every domain checked concurrently."""
    selectors = selectors or {}

    async def run() -> list[Posture]:
        client = DnsClient(nameservers, timeout)
        return list(await asyncio.gather(*(check_domain(client, d, selectors.get(d, ())) for d in domains)))

    from dmarclens.enrich.rdns import run_coroutine_blocking

    return run_coroutine_blocking(run())


# --- what the reports say --------------------------------------------------------


@dataclass(frozen=True)
class ReportEvidence:
    """Per domain: SPF passes for the domain by source, and DKIM selectors seen."""

    spf_passes: list[tuple[str | None, str | None, int, date]]  # (rdns base, as_domain, messages, last day)
    selectors: list[tuple[str, int, date]]  # (selector, messages, last day)
    newest_day: date | None


def read_evidence(con: duckdb.DuckDBPyConnection, domain: str, days: int) -> ReportEvidence:
    """What the reports of the last ``days`` days (before the newest one) show for ``domain``."""
    newest = con.execute(
        """SELECT max(r.day) FROM records r JOIN reports p USING (report_key)
           WHERE lower(p.domain) = ? OR lower(r.header_from) = ?""",
        [domain, domain],
    ).fetchone()
    newest_day = newest[0] if newest else None
    if newest_day is None:
        return ReportEvidence([], [], None)
    since = newest_day - timedelta(days=days)
    spf_rows = con.execute(
        """SELECT i.base_domain, i.as_domain, sum(r.count), max(r.day)
           FROM records r LEFT JOIN ip_info i ON i.ip = r.source_ip
           WHERE r.day > ? AND len(list_filter(r.spf, lambda s: lower(s.domain) = ?
                                                 AND lower(s.result) = 'pass')) > 0
           GROUP BY 1, 2""",
        [since, domain],
    ).fetchall()
    sel_rows = con.execute(
        """SELECT d.selector, sum(count), max(day) FROM (
               SELECT day, count, unnest(dkim) AS d FROM records WHERE day > ?)
           WHERE lower(d.domain) = ? AND d.selector IS NOT NULL AND d.selector <> ''
           GROUP BY 1 ORDER BY max(day) DESC, sum(count) DESC LIMIT ?""",
        [since, domain, MAX_SELECTORS],
    ).fetchall()
    return ReportEvidence(
        [(a, b, int(c or 0), d) for a, b, c, d in spf_rows],
        [(s, int(c or 0), d) for s, c, d in sel_rows],
        newest_day,
    )


def apply_usage(p: Posture, ev: ReportEvidence) -> None:
    """Mark each platform include used (messages, last seen) or unused, then write findings."""
    use: dict[str, tuple[int, date]] = {}
    for base, as_dom, messages, last in ev.spf_passes:
        plat = platform_for_source(base, as_dom)
        if plat:
            prev = use.get(plat.name)
            use[plat.name] = (messages + (prev[0] if prev else 0), max(last, prev[1]) if prev else last)
    for inc in p.spf.includes:
        if inc.platform is None:
            continue
        seen = use.get(inc.platform)
        inc.messages = seen[0] if seen else 0
        inc.last_seen = seen[1] if seen else None
        inc.unused = ev.newest_day is not None and not seen
    sel = {s: (m, d) for s, m, d in ev.selectors}
    for k in p.dkim:
        if k.selector in sel:
            k.messages, k.last_seen = sel[k.selector]
    p.findings = findings_for(p)


# --- storing -----------------------------------------------------------------------


def store(con: duckdb.DuckDBPyConnection, results: Sequence[Posture], nameservers: Sequence[str] = ()) -> None:
    """Insert one posture_checks row per domain plus its includes and selectors (caller's transaction)."""
    for p in results:
        d, s = p.dmarc, p.spf
        row = con.execute(
            """INSERT INTO posture_checks (checked_at, domain, dmarc_record, dmarc_source, dmarc_status, p, sp,
                   np, pct, rua, ruf, adkim, aspf, policy_strength, spf_record, spf_status, spf_lookups,
                   spf_void_lookups, spf_all, findings, nameservers)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING check_id""",
            [p.checked_at, p.domain, d.record, d.source, d.status, d.p, d.sp, d.np, d.pct, d.rua, d.ruf,
             d.tags.get("adkim"), d.tags.get("aspf"), d.strength, s.record, s.status,
             s.lookups if s.record else None, s.void_lookups if s.record else None, s.all, p.findings,
             ",".join(nameservers)],
        ).fetchone()
        assert row is not None
        check_id = row[0]
        if s.includes:
            con.executemany(
                "INSERT INTO posture_spf_includes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[check_id, p.domain, i.include, i.parent, i.depth, i.platform, i.multi_tenant, i.status,
                  i.messages, i.last_seen, i.unused] for i in s.includes],
            )
        if p.dkim:
            con.executemany(
                "INSERT INTO posture_dkim_selectors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[check_id, p.domain, k.selector, k.status, k.key_type, k.key_bits, k.record, k.messages,
                  k.last_seen] for k in p.dkim],
            )


def dns_failed(p: Posture) -> bool:
    """True when neither the DMARC nor the SPF record could be read: the check says nothing."""
    return p.dmarc.status in DNS_FAILURES and p.spf.status in DNS_FAILURES


def posture_db(
    db_path: str | Path,
    domains: Sequence[str] = (),
    *,
    configured: Sequence[str] = (),
    nameservers: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    unused_days: int = DEFAULT_UNUSED_DAYS,
    lock_timeout: float = 30.0,
) -> list[Posture]:
    """Library entry point behind ``dmarclens posture``: read evidence, close, ask DNS, store."""
    from dmarclens.enrich.classify import owned_domains
    from dmarclens.store import db as dbmod

    with dbmod.open_db(db_path, lock_timeout=lock_timeout) as con:
        targets = [d.strip().lower().rstrip(".") for d in domains if d.strip()] or owned_domains(con, configured)
        evidence = {d: read_evidence(con, d, unused_days) for d in targets}
    selectors = {d: [s for s, _, _ in ev.selectors] for d, ev in evidence.items()}
    results = check_domains(targets, selectors, nameservers=nameservers, timeout=timeout)
    for p in results:
        apply_usage(p, evidence[p.domain])
    with dbmod.open_db(db_path, lock_timeout=lock_timeout) as con, dbmod.transaction(con):
        store(con, results, nameservers)
    return results
