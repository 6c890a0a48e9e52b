"""The optional expected-sender contract, ``senders.toml``.

Why: baselines learn "normal" from history, so a sender that was already
abusing the domain on day one, or a slow change over months, becomes normal.
A short list written by the owner -- which services, DKIM keys and
envelope-from domains may send as each domain, and how much -- is diffed on
every detection run; passing mail outside it is flagged as
``contract_violation``, and listed services count as authorized from day one.

Format (all keys optional; one table per policy domain)::

    [domains."example.com"]
    services = ["Microsoft", "Twilio SendGrid"]   # ip_info service or AS name; case-insensitive, substring
    dkim = ["example.com:selector1", "example.com:s1", "sendgrid.info"]  # "d=domain" or "domain:selector"
    envelope_from = ["example.com", "*.example.com"]  # exact names or *.suffix
    daily_messages = [100, 8000]                  # band for all DMARC-passing mail per day
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmarclens.core.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from dmarclens.detect.rules import Finding


@dataclass(frozen=True)
class DomainContract:
    """What one domain's owner expects; an empty tuple means "not constrained"."""

    domain: str
    services: tuple[str, ...] = ()
    dkim: tuple[str, ...] = ()
    envelope_from: tuple[str, ...] = ()
    daily_min: int | None = None
    daily_max: int | None = None

    def service_allowed(self, service: str) -> bool:
        if not self.services:
            return True
        s = service.lower()
        return any(a.lower() in s or s in a.lower() for a in self.services)

    def dkim_allowed(self, d: str, selector: str | None) -> bool:
        if not self.dkim:
            return True
        d = (d or "").lower()
        for entry in self.dkim:
            dom, _, sel = entry.lower().partition(":")
            if dom == d and (not sel or sel == (selector or "").lower()):
                return True
        return False

    def envelope_allowed(self, env: str) -> bool:
        if not self.envelope_from or not env:
            return True
        env = env.lower()
        for entry in self.envelope_from:
            e = entry.lower()
            if e.startswith("*.") and (env.endswith(e[1:]) or env == e[2:]):
                return True
            if env == e:
                return True
        return False


@dataclass
class Contract:
    domains: dict[str, DomainContract] = field(default_factory=dict)
    path: Path | None = None

    def for_domain(self, domain: str) -> DomainContract | None:
        return self.domains.get(domain.lower())


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where}: expected a list of strings")


def parse_contract(data: dict[str, Any], path: Path | None = None) -> Contract:
    """Validate the TOML structure and build a Contract (ConfigError names the bad key)."""
    where = str(path or "senders.toml")
    doms = data.get("domains", {})
    if not isinstance(doms, dict):
        raise ConfigError(f"{where}: [domains] must be a table of domain tables")
    out: dict[str, DomainContract] = {}
    for name, body in doms.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: domains.{name} must be a table")
        unknown = set(body) - {"services", "dkim", "envelope_from", "daily_messages"}
        if unknown:
            raise ConfigError(f"{where}: domains.{name}: unknown key(s) {', '.join(sorted(unknown))}")
        band = body.get("daily_messages")
        lo = hi = None
        if band is not None:
            if not (isinstance(band, list) and len(band) == 2 and all(isinstance(x, int) for x in band)):
                raise ConfigError(f"{where}: domains.{name}.daily_messages must be [min, max]")
            lo, hi = int(band[0]), int(band[1])
        out[name.lower()] = DomainContract(
            domain=name.lower(),
            services=_strings(body.get("services"), f"{where}: domains.{name}.services"),
            dkim=_strings(body.get("dkim"), f"{where}: domains.{name}.dkim"),
            envelope_from=_strings(body.get("envelope_from"), f"{where}: domains.{name}.envelope_from"),
            daily_min=lo, daily_max=hi,
        )
    return Contract(out, path)


def load_contract(path: str | Path | None) -> Contract | None:
    """Read senders.toml; None when no path is given and ./senders.toml does not exist."""
    if path is None:
        default = Path("senders.toml")
        if not default.is_file():
            return None
        path = default
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as e:
        raise ConfigError(f"senders contract {path}: not found") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"senders contract {path}: {e}") from e
    return parse_contract(data, path)


def authorized_services(contract: Contract | None, services: pd.DataFrame) -> list[tuple[str, str]]:
    """(domain, service) pairs the contract allows, among the services seen."""
    if contract is None or services is None or services.empty:
        return []
    out = []
    for domain, service in services[["domain", "service"]].drop_duplicates().itertuples(index=False):
        c = contract.for_domain(domain)
        if c and c.services and c.service_allowed(service):
            out.append((domain, service))
    return out


def violations(contract: Contract | None, rows: pd.DataFrame) -> list[Finding]:
    """Passing mail outside the contract, one finding per identity and run of days."""
    from dmarclens.detect.rules import Finding, as_date, episodes, n

    if contract is None or rows is None or rows.empty:
        return []
    df = rows.copy()
    df["day"] = [as_date(d) for d in df["day"]]
    out: list[Finding] = []
    for domain, drows in df.groupby("domain"):
        c = contract.for_domain(domain)
        if c is None:
            continue
        checks: list[tuple[str, dict[str, Any], dict[str, Any], Any]] = []
        if c.services:
            bad = drows[[not c.service_allowed(s) for s in drows["service"]]]
            for svc, g in bad.groupby("service"):
                checks.append(("service", {"service": svc}, {"service": svc}, g))
        if c.dkim:
            bad = drows[[d is not None and not c.dkim_allowed(d, s)
                         for d, s in zip(drows["dkim_domain"], drows["dkim_selector"], strict=True)]]
            for (d, s), g in bad.groupby(["dkim_domain", "dkim_selector"]):
                checks.append(("DKIM key", {"dkim_domain": d, "dkim_selector": s or None},
                               {"dkim_domain": d, "dkim_selector": s}, g))
        if c.envelope_from:
            bad = drows[[not c.envelope_allowed(e) for e in drows["env_from"]]]
            for env, g in bad.groupby("env_from"):
                checks.append(("envelope-from", {"envelope_from": env}, {"env_from": env}, g))
        for what, identity, match, g in checks:
            per_day = g.groupby("day")["msgs"].sum()
            for first, last in episodes(list(per_day.index)):
                msgs = int(per_day[(per_day.index >= first) & (per_day.index <= last)].sum())
                peak = int(per_day[(per_day.index >= first) & (per_day.index <= last)].max())
                label = next(iter(identity.values()))
                if what == "DKIM key" and identity.get("dkim_selector"):
                    label = f"{identity['dkim_domain']} selector {identity['dkim_selector']}"
                sev = "high" if peak >= 500 else "medium"
                span = f"On {first}" if first == last else f"From {first} to {last}"
                out.append(Finding(
                    kind="contract_violation", domain=domain, identity=identity, first_day=first, last_day=last,
                    messages=msgs, expected=0.0, passed=msgs, failed=0, severity=sev, score=float(peak),
                    details={"rule": what, "value": label, "contract": str(contract.path or "senders.toml"),
                             "sentence": (f"{span}, {n(msgs)} DMARC-passing messages for {domain} came through "
                                          f"the {what} {label}, which senders.toml does not list for {domain}.")},
                    match={**match, "traffic": "direct_pass"},
                ))
        if c.daily_min is not None or c.daily_max is not None:
            total = drows.groupby("day")["msgs"].sum()
            lo, hi = c.daily_min or 0, c.daily_max
            over = total[total > hi] if hi is not None else total.iloc[0:0]
            for first, last in episodes(list(over.index)):
                part = over[(over.index >= first) & (over.index <= last)]
                msgs, peak = int(part.sum()), int(part.max())
                days = (last - first + timedelta(days=1)).days
                sev = "high" if hi and peak >= 2 * hi else "medium"
                span = f"On {first}" if first == last else f"From {first} to {last}"
                out.append(Finding(
                    kind="contract_violation", domain=domain, identity={"volume_band": f"{lo}-{hi}"},
                    first_day=first, last_day=last, messages=msgs, expected=float(hi or 0) * days, passed=msgs, failed=0,
                    severity=sev, score=float(peak) / max(hi or 1, 1),
                    details={"rule": "daily_messages", "band": [lo, hi], "peak": peak,
                             "sentence": (f"{span}, {domain} sent {n(msgs)} DMARC-passing messages (peak {n(peak)} "
                                          f"a day), above the {n(hi or 0)} a day senders.toml allows.")},
                    match={"traffic": "direct_pass"},
                ))
    return out


def adjust(findings: list[Finding], contract: Contract | None) -> list[Finding]:
    """Contract-aware severities: what the contract allows is expected, what it forbids is told once.

    * a new source, identifier or range the contract explicitly allows drops to ``info``;
    * a new source or identifier that the contract also flags is told by the
      contract finding (which keeps the higher severity).
    """
    from dmarclens.detect.model import RANK

    if contract is None:
        return findings
    viol = [f for f in findings if f.kind == "contract_violation"]
    out: list[Finding] = []
    for f in findings:
        c = contract.for_domain(f.domain)
        if c is None or f.kind == "contract_violation":
            out.append(f)
            continue
        svc = f.identity.get("service")
        allowed = False
        if f.kind in ("new_source", "new_ip_range_in_authorized_provider") and svc and c.services:
            allowed = c.service_allowed(str(svc))
        elif f.kind == "new_identifier":
            ident = f.details.get("identifier")
            if ident == "dkim" and c.dkim:
                allowed = c.dkim_allowed(str(f.identity.get("dkim_domain")), f.identity.get("dkim_selector"))
            elif ident == "envelope_from" and c.envelope_from:
                allowed = c.envelope_allowed(str(f.identity.get("envelope_from")))
        if allowed and f.kind != "new_ip_range_in_authorized_provider":
            f.severity = "info"
            f.details["allowed_by_contract"] = True
        dup = [v for v in viol if v.domain == f.domain and v.first_day <= f.last_day and v.last_day >= f.first_day
               and all(f.identity.get(k) == val for k, val in v.identity.items() if k != "volume_band")
               and "volume_band" not in v.identity]
        if dup and f.kind in ("new_source", "new_identifier"):
            for v in dup:
                if RANK[f.severity] > RANK[v.severity]:
                    v.severity = f.severity
            continue
        out.append(f)
    return out
