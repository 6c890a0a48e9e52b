"""Report trust: does the mail's authentication match the reporter the report claims to be?

``sources.mailauth`` says which domains authenticated a mail; this compares
them with the report's own ``<email>`` domain or domain-shaped ``org_name``
(relaxed alignment on organisational domains). The verdict is stored per
report in ``report_trust.mail_auth``: ``verified``, ``unverified`` or
``not_mail`` (a bare file: nothing to check).
"""
from __future__ import annotations

import re

from dmarclens.core.domains import org_domain
from dmarclens.core.models import NOT_MAIL, MailAuth, Report, Verdict

_DOMAIN_LIKE_RE = re.compile(r"^(?=.{3,253}$)[a-z0-9-]+(\.[a-z0-9-]+)+$")


def verdict(auth: MailAuth | None, report: Report) -> Verdict:
    """Combine a mail's authentication with the reporter the report claims to be."""
    if auth is None:
        return NOT_MAIL
    claimed = claimed_domains(report)
    from_org = org_domain(auth.from_domain) if auth.from_domain else None
    aligned = [(d, m) for d, m in auth.authenticated if from_org and org_domain(d) == from_org]
    if not aligned:
        who = auth.from_domain or "an unreadable sender"
        extra = f" ({auth.detail})" if auth.detail else ""
        return Verdict("unverified", detail=f"nothing authenticates the sender {who}{extra}")
    domain, method = aligned[0]
    if from_org in {org_domain(c) for c in claimed}:
        return Verdict("verified", method=method, domain=domain,
                       detail=f"mail from {auth.from_domain} authenticated by {method} as {domain}")
    return Verdict("unverified", method=method, domain=domain,
                   detail=f"mail authenticated as {domain}, but the report claims to come from "
                          f"{', '.join(sorted(claimed)) or 'an unnamed reporter'}")


def claimed_domains(report: Report) -> set[str]:
    """Domains the report says its reporter is: its contact address, and org_name when domain-shaped."""
    out: set[str] = set()
    if report.org_email and "@" in report.org_email:
        out.add(report.org_email.rsplit("@", 1)[1].strip().strip(">").lower())
    name = (report.org_name or "").strip().lower()
    if _DOMAIN_LIKE_RE.match(name):
        out.add(name)
    return out
