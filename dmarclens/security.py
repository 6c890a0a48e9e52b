"""Forged-report defence: which reports are about the owner's domains, and
whether the mail that carried a report really came from its reporter.

A rua address is public. Anyone can mail it an aggregate report claiming to
be from google.com about any domain, with any numbers. Two checks keep such
reports from steering the owner's decisions (threat model: docs/security.md):

* **Owned domains.** With ``domains = [...]`` configured (or
  ``DMARCLENS_DOMAINS``), a report whose policy domain is not one of them (or
  a subdomain of one) is stored apart: its report row is kept (so duplicates
  are still recognised and nothing is lost) but its records go to
  ``foreign_records`` instead of ``records``, so no view, rollup, detector or
  alert counts them. When the list changes, reports move between the two on
  the next ingest.
* **Mail authentication.** For a report that arrived in a mail (IMAP, .eml,
  mbox, Maildir) the mail's own authentication is checked: a DKIM signature
  verified with dkimpy (keys from DNS), or an ``Authentication-Results``
  header written by a receiving server the owner trusts
  (``trusted_authserv_ids``). The authenticated domain must be aligned with
  the mail's From (relaxed, organisational domain) and with the reporter the
  report names (its ``<email>`` domain or a domain-shaped ``org_name``).
  Verdict per report in ``report_trust.mail_auth``: ``verified``,
  ``unverified`` or ``not_mail`` (a bare file: nothing to check).

Settings (``[security]`` in the config, environment wins):
``trusted_authserv_ids`` / ``DMARCLENS_TRUSTED_AUTHSERV_IDS`` (comma list),
``dkim`` / ``DMARCLENS_DKIM`` (``off`` skips DNS key lookups),
``dns_servers`` / ``DMARCLENS_DKIM_NAMESERVER`` (``host[:port]``, comma list),
``dns_timeout`` / ``DMARCLENS_DKIM_TIMEOUT`` (seconds, default 3).
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from dmarclens.config import Settings
    from dmarclens.models import Report

log = logging.getLogger(__name__)

MAX_SIGNATURES = 5
"""DKIM signatures tried per mail; more is noise or an attempt to burn CPU and DNS."""

_AR_METHOD_RE = re.compile(r"\b(dkim|dmarc)\s*=\s*(\w+)([^;]*)", re.I)
_AR_PROP_RE = re.compile(r"\bheader\.(d|i|from)\s*=\s*\"?([^\s;\"]+)", re.I)
_DOMAIN_LIKE_RE = re.compile(r"^(?=.{3,253}$)[a-z0-9-]+(\.[a-z0-9-]+)+$")


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SecuritySettings:
    """What the checks need, resolved once per process (see module docstring)."""

    domains: tuple[str, ...] = ()
    trusted_authserv_ids: tuple[str, ...] = ()
    dkim: bool = True
    dns_servers: tuple[str, ...] = ()  # empty: the system resolver
    dns_timeout: float = 3.0


def _split(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(x).strip().lower() for x in items if str(x).strip())


def security_settings(settings: Settings | None = None, env: dict[str, str] | None = None) -> SecuritySettings:
    """Build SecuritySettings from Settings (``domains``, ``[security]``) and the environment."""
    env = dict(os.environ) if env is None else env
    if settings is None:
        from dmarclens.config import load_settings

        try:
            settings = load_settings()
        except Exception as e:  # noqa: BLE001 - a broken config is reported by the command itself
            log.debug("security settings: config not readable (%s); using the environment only", e)
            from dmarclens.config import Settings as _Settings

            settings = _Settings()
    raw = settings.raw.get("security", {}) if isinstance(settings.raw.get("security"), dict) else {}
    dkim_value = env.get("DMARCLENS_DKIM", raw.get("dkim", True))
    dkim_on = str(dkim_value).strip().lower() not in {"0", "off", "false", "no"}
    try:
        timeout = float(env.get("DMARCLENS_DKIM_TIMEOUT", raw.get("dns_timeout", 3.0)))
    except ValueError:
        timeout = 3.0
    return SecuritySettings(
        domains=tuple(d.strip(".") for d in settings.domains),
        trusted_authserv_ids=_split(env.get("DMARCLENS_TRUSTED_AUTHSERV_IDS") or raw.get("trusted_authserv_ids")),
        dkim=dkim_on,
        dns_servers=_split(env.get("DMARCLENS_DKIM_NAMESERVER") or raw.get("dns_servers")),
        dns_timeout=timeout,
    )


_current: SecuritySettings | None = None
_current_lock = threading.Lock()


def configure(settings: Settings | SecuritySettings | None) -> SecuritySettings:
    """Set the process-wide settings (commands call this with their loaded Settings)."""
    global _current
    value = settings if isinstance(settings, SecuritySettings) else security_settings(settings)
    with _current_lock:
        _current = value
    _dns_cache.clear()
    return value


def current() -> SecuritySettings:
    """The process-wide settings; loaded from the config file and environment on first use."""
    global _current
    with _current_lock:
        if _current is None:
            _current = security_settings()
        return _current


# ---------------------------------------------------------------------- domains


@lru_cache(maxsize=8192)
def org_domain(name: str) -> str:
    """Organisational domain (public suffix list), as DMARC relaxed alignment uses it."""
    import publicsuffixlist

    name = name.strip().strip(".").lower()
    found = _psl(publicsuffixlist).privatesuffix(name)
    return found or name


@lru_cache(maxsize=1)
def _psl(module: Any) -> Any:
    return module.PublicSuffixList()


def is_owned(domain: str, domains: Sequence[str]) -> bool:
    """A policy domain is the owner's when it is a listed domain or below one.

    No list configured means nothing is filtered (every report is the owner's).
    """
    if not domains:
        return True
    d = domain.strip().strip(".").lower()
    return any(d == o or d.endswith("." + o) for o in domains)


# ---------------------------------------------------------------------- mail authentication


@dataclass(frozen=True)
class MailAuth:
    """What one mail's own authentication showed (before looking at the report in it)."""

    from_domain: str | None
    authenticated: tuple[tuple[str, str], ...] = ()  # (domain, method) pairs that passed
    detail: str = ""  # why not, when nothing passed

    def to_json(self) -> dict[str, Any]:
        return {"from_domain": self.from_domain, "authenticated": list(self.authenticated), "detail": self.detail}


@dataclass(frozen=True)
class Verdict:
    """The stored verdict for one report (``report_trust``)."""

    mail_auth: str  # verified | unverified | not_mail
    method: str | None = None
    domain: str | None = None
    detail: str = ""


NOT_MAIL = Verdict("not_mail", detail="read from a file, not a mail: there is no mail authentication to check")

_dns_cache: dict[bytes, bytes | None] = {}
_dns_lock = threading.Lock()


def _dnsfunc(name: bytes, timeout: float = 3.0) -> bytes | None:
    """TXT lookup for dkimpy through dnspython, honouring ``dns_servers``; cached per process.

    A failure is cached too: one mailbox holds many mails signed with the
    same key, and a dead resolver must not cost a timeout per mail.
    """
    with _dns_lock:
        if name in _dns_cache:
            return _dns_cache[name]
    sec = current()
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=not sec.dns_servers)
    if sec.dns_servers:
        hosts, port = [], 53
        for server in sec.dns_servers:
            host, _, p = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
            hosts.append(host or server)
            if p:
                port = int(p)
        resolver.nameservers = hosts
        resolver.port = port
    value: bytes | None = None
    try:
        answer = resolver.resolve(name.decode("ascii", "replace"), "TXT", lifetime=sec.dns_timeout)
        value = b"".join(b"".join(r.strings) for r in answer)
    except (dns.exception.DNSException, ValueError, OSError) as e:
        log.debug("DKIM key lookup %s failed: %s", name, e)
    with _dns_lock:
        _dns_cache[name] = value
    return value


def _from_domain(msg: Message) -> str | None:
    _, addr = email.utils.parseaddr(str(msg.get("From") or ""))
    if "@" not in addr:
        return None
    return addr.rsplit("@", 1)[1].strip().strip(">").lower() or None


def _authentication_results(msg: Message, trusted: Sequence[str]) -> list[tuple[str, str]]:
    """(domain, method) pairs that a trusted receiving server recorded as passing.

    Only headers whose authserv-id the owner listed count: anyone can write
    an Authentication-Results header into the mail they send (RFC 8601 §5).
    """
    out: list[tuple[str, str]] = []
    if not trusted:
        return out
    for header in msg.get_all("Authentication-Results") or []:
        text = " ".join(str(header).split())
        authserv = text.split(";", 1)[0].strip().split()[0].lower() if text.split(";", 1)[0].strip() else ""
        if authserv not in trusted:
            continue
        for method, result, rest in _AR_METHOD_RE.findall(text):
            if result.lower() != "pass":
                continue
            for prop, value in _AR_PROP_RE.findall(rest):
                domain = value.rsplit("@", 1)[-1].lower()
                if (method.lower(), prop.lower()) in {("dkim", "d"), ("dkim", "i"), ("dmarc", "from")}:
                    out.append((domain, f"authentication-results {method.lower()} ({authserv})"))
    return out


def check_mail(data: bytes, msg: Message | None = None) -> MailAuth:
    """Check one mail's authentication. Never raises: a broken mail is simply unverified."""
    try:
        if msg is None:
            from dmarclens.sources.mime import parse_message

            msg = parse_message(data)
        sec = current()
        from_domain = _from_domain(msg)
        passed = _authentication_results(msg, sec.trusted_authserv_ids)
        notes: list[str] = []
        n_sigs = len(msg.get_all("DKIM-Signature") or [])
        if n_sigs and sec.dkim:
            passed.extend(_verify_dkim(data, min(n_sigs, MAX_SIGNATURES), sec, notes))
        elif n_sigs:
            notes.append("DKIM checks are switched off (dkim = off)")
        else:
            notes.append("the mail carries no DKIM signature")
        if not passed and sec.trusted_authserv_ids:
            notes.append("no trusted Authentication-Results header says it passed")
        return MailAuth(from_domain=from_domain, authenticated=tuple(dict.fromkeys(passed)), detail="; ".join(notes))
    except Exception as e:  # noqa: BLE001 - verification must never stop ingest
        log.debug("mail authentication check failed", exc_info=True)
        return MailAuth(from_domain=None, detail=f"could not check the mail's authentication: {type(e).__name__}")


def _verify_dkim(data: bytes, count: int, sec: SecuritySettings, notes: list[str]) -> list[tuple[str, str]]:
    import dkim

    out: list[tuple[str, str]] = []
    quiet = logging.getLogger("dmarclens.security.dkimpy")
    quiet.setLevel(logging.CRITICAL)
    for idx in range(count):
        d = dkim.DKIM(data, logger=quiet, timeout=sec.dns_timeout)
        try:
            ok = d.verify(idx=idx, dnsfunc=_dnsfunc)
        except Exception as e:  # noqa: BLE001 - dkimpy raises several types on malformed signatures
            notes.append(f"DKIM signature {idx + 1} unusable ({type(e).__name__}: {str(e)[:80]})")
            continue
        domain = (d.domain or b"").decode("ascii", "replace").lower()
        if ok:
            out.append((domain, "dkim"))
        else:
            notes.append(f"DKIM signature of {domain or '?'} did not verify")
    return out


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


# ---------------------------------------------------------------------- storage (migration 0007)


@dataclass
class TrustRow:
    """One report_trust row waiting for its transaction."""

    report_key: str
    domain: str
    owned: bool
    verdict: Verdict = field(default=NOT_MAIL)


def _has_trust_tables(con: duckdb.DuckDBPyConnection) -> bool:
    # fetchall, not fetchone: DuckDB keeps a half-read result open and refuses the next register()
    [(n,)] = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'report_trust'"
    ).fetchall()
    return bool(n)


def _record_columns(con: duckdb.DuckDBPyConnection) -> str:
    """Columns shared by records and foreign_records (records may gain columns in later migrations)."""
    rows = con.execute(
        """SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = 'foreign_records'
           AND column_name IN (SELECT column_name FROM duckdb_columns()
                               WHERE schema_name = 'main' AND table_name = 'records')
           ORDER BY column_index"""
    ).fetchall()
    return ", ".join(f'"{r[0]}"' for r in rows)


def _move_records(con: duckdb.DuckDBPyConnection, keys: Sequence[str], *, to_foreign: bool) -> None:
    if not keys:
        return
    cols = _record_columns(con)
    src, dst = ("records", "foreign_records") if to_foreign else ("foreign_records", "records")
    con.execute(f"INSERT INTO {dst} ({cols}) SELECT {cols} FROM {src} WHERE report_key IN (SELECT unnest(?))",
                [list(keys)])
    con.execute(f"DELETE FROM {src} WHERE report_key IN (SELECT unnest(?))", [list(keys)])


def store_trust(con: duckdb.DuckDBPyConnection, rows: Iterable[TrustRow]) -> int:
    """Insert report_trust rows for reports just stored, and move non-owned reports' records apart.

    Runs inside the caller's transaction, after the records were inserted and
    before the rollup is updated, so a foreign report never reaches a rollup.
    """
    rows = list(rows)
    if not rows or not _has_trust_tables(con):
        return 0
    import pyarrow as pa

    # One Arrow insert per batch: executemany costs milliseconds per row in DuckDB.
    # Every column typed: pyarrow imports pandas (~0.2 s, ~45 MB) to infer an untyped list.
    table = pa.table({
        "report_key": pa.array([r.report_key for r in rows], pa.string()),
        "domain": pa.array([r.domain for r in rows], pa.string()),
        "owned": pa.array([r.owned for r in rows], pa.bool_()),
        "mail_auth": pa.array([r.verdict.mail_auth for r in rows], pa.string()),
        "auth_method": pa.array([r.verdict.method for r in rows], pa.string()),
        "auth_domain": pa.array([r.verdict.domain for r in rows], pa.string()),
        "auth_detail": pa.array([r.verdict.detail[:500] for r in rows], pa.string()),
        "checked_at": pa.array([datetime.now(UTC)] * len(rows), pa.timestamp("us", tz="UTC")),
    })
    con.register("_dl_new_trust", table)
    try:
        con.execute("INSERT INTO report_trust (report_key, domain, owned, mail_auth, auth_method, auth_domain, "
                    "auth_detail, checked_at) SELECT * FROM _dl_new_trust")
    finally:
        con.unregister("_dl_new_trust")
    foreign = [r.report_key for r in rows if not r.owned]
    _move_records(con, foreign, to_foreign=True)
    return len(foreign)


def upgrade_trust(con: duckdb.DuckDBPyConnection, report_key: str, new: Verdict) -> bool:
    """A byte-identical copy arrived with better authentication: keep the better verdict."""
    if new.mail_auth != "verified" or not _has_trust_tables(con):
        return False
    found = con.execute("SELECT mail_auth FROM report_trust WHERE report_key = ?", [report_key]).fetchall()
    if not found or found[0][0] == "verified":
        return False
    con.execute(
        "UPDATE report_trust SET mail_auth = ?, auth_method = ?, auth_domain = ?, auth_detail = ?, checked_at = ? "
        "WHERE report_key = ?",
        [new.mail_auth, new.method, new.domain, f"{new.detail} (a later identical copy)"[:500], datetime.now(UTC),
         report_key],
    )
    return True


def apply_domain_list(con: duckdb.DuckDBPyConnection, domains: Sequence[str]) -> tuple[str, ...]:
    """Bring stored reports in line with the configured domain list; return the list in force.

    Called once per ingest run inside its first transaction. The database
    remembers the list (``owned_domains``): a run with no list configured
    (cron from another directory, a one-off ``ingest``) uses the remembered
    one instead of exposing hidden reports again. Cheap when the list is
    unchanged. When it changed, every report is reclassified: newly foreign
    ones leave ``records`` and their domains' rollup rows are dropped; newly
    owned ones come back and are rolled up.
    """
    wanted = sorted({d.strip().strip(".").lower() for d in domains if d.strip()})
    if not _has_trust_tables(con):
        return tuple(wanted)
    have = sorted(r[0] for r in con.execute("SELECT domain FROM owned_domains").fetchall())
    if not wanted or wanted == have:
        return tuple(have)
    now = datetime.now(UTC)
    con.execute("DELETE FROM owned_domains")
    if wanted:
        con.executemany("INSERT INTO owned_domains VALUES (?, ?)", [[d, now] for d in wanted])
    # Reports stored before 0007 (or while no trust row was written) get one now.
    con.execute(
        "INSERT INTO report_trust (report_key, domain, owned, mail_auth, auth_detail, checked_at) "
        "SELECT report_key, domain, true, 'not_checked', 'stored before mail authentication was recorded', ? "
        "FROM reports WHERE report_key NOT IN (SELECT report_key FROM report_trust)", [now],
    )
    rows = con.execute("SELECT report_key, domain, owned FROM report_trust").fetchall()
    hide = [k for k, d, owned in rows if owned and not is_owned(d, wanted)]
    show = [k for k, d, owned in rows if not owned and is_owned(d, wanted)]
    if hide:
        con.execute("UPDATE report_trust SET owned = false WHERE report_key IN (SELECT unnest(?))", [hide])
        _move_records(con, hide, to_foreign=True)
        hidden = set(hide)
        hidden_domains = sorted({d for k, d, _ in rows if k in hidden})
        from dmarclens.store import rollups

        [(exists,)] = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
            [rollups.ROLLUP_TABLE]).fetchall()
        if exists:
            # A domain is hidden whole, so all of its rollup rows go.
            con.execute(f"DELETE FROM {rollups.ROLLUP_TABLE} WHERE domain IN (SELECT unnest(?))", [hidden_domains])
    if show:
        con.execute("UPDATE report_trust SET owned = true WHERE report_key IN (SELECT unnest(?))", [show])
        _move_records(con, show, to_foreign=False)
        from dmarclens.store import rollups

        rollups.add_for_reports(con, show)
    if hide or show:
        log.warning("domain list changed: %d report(s) now hidden as not yours, %d shown again", len(hide), len(show))
    return tuple(wanted)
