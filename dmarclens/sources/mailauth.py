"""Whether the mail that carried a report really came from its reporter.

A rua address is public. Anyone can mail it an aggregate report claiming to
be from google.com about any domain, with any numbers (threat model:
docs/security.md). For a report that arrived in a mail (IMAP, .eml, mbox,
Maildir) the mail's own authentication is checked here: a DKIM signature
verified with dkimpy (keys from DNS), or an ``Authentication-Results``
header written by a receiving server the owner trusts
(``trusted_authserv_ids``). ``dmarclens.ingest.trust`` then compares the
authenticated domain with the reporter the report names.

The settings also carry the owner's domains (``domains = [...]`` or
``DMARCLENS_DOMAINS``), which decide which reports are stored apart.

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
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from typing import TYPE_CHECKING, Any

from dmarclens.core.models import MailAuth

if TYPE_CHECKING:
    from dmarclens.core.config import Settings

log = logging.getLogger(__name__)


MAX_SIGNATURES = 5
"""DKIM signatures tried per mail; more is noise or an attempt to burn CPU and DNS."""


_AR_METHOD_RE = re.compile(r"\b(dkim|dmarc)\s*=\s*(\w+)([^;]*)", re.I)


_AR_PROP_RE = re.compile(r"\bheader\.(d|i|from)\s*=\s*\"?([^\s;\"]+)", re.I)


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
        from dmarclens.core.config import load_settings

        try:
            settings = load_settings()
        except Exception as e:  # noqa: BLE001 - a broken config is reported by the command itself
            log.debug("security settings: config not readable (%s); using the environment only", e)
            from dmarclens.core.config import Settings as _Settings

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
    quiet = logging.getLogger("dmarclens.sources.mailauth.dkimpy")
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
