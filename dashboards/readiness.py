"""Policy readiness: would p=quarantine / p=reject hurt a domain's legitimate mail?

Pure functions over the query layer's per-source numbers, so the verdict is
testable without Streamlit. The rules, in plain words:

* A source (service or network) is **legitimate** when most of its mail for
  the domain passes DMARC: passing needs a key or an SPF record the owner
  controls, so a mostly-passing source is one the owner authorised.
* A failing source whose failures receivers mostly override (forwarded,
  mailing list) is **forwarding**; enforcement barely changes its fate.
* Everything else failing is **unauthorised**: enforcement blocking it is the
  point of DMARC.
* Enforcement "hurts" by the legitimate sources' failing mail that receivers
  did not override. The verdict follows how much of it there is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

LEGIT_PASS_RATE = 0.5
MIN_DAYS = 14
REJECT_MAX_LOSS = 0.005  # ≤ 0.5 % of legitimate mail would be lost overall ...
SOURCE_MAX_LOSS = 0.02  # ... and no legitimate source loses more than 2 % of its mail
QUARANTINE_MAX_LOSS = 0.02

READY_REJECT = "Ready for p=reject"
READY_QUARANTINE = "Ready for p=quarantine"
NOT_READY = "Not ready to enforce"
ENFORCING = "Enforcing (p=reject)"
NO_DATA = "Not enough data"


@dataclass
class Verdict:
    """The readiness verdict for one domain and the reasons behind it (plain sentences)."""

    domain: str
    status: str
    level: str  # "good", "warn" or "bad": how the page colours it
    reasons: list[str] = field(default_factory=list)
    loss_share: float | None = None


def classify(sources: pd.DataFrame) -> pd.DataFrame:
    """Add ``role``, ``at_risk`` (mail enforcement would block) and ``at_risk_share`` per source row."""
    out = sources.copy()
    if out.empty:
        for col in ("role", "at_risk", "at_risk_share", "pass_rate"):
            out[col] = pd.Series(dtype="float64" if col != "role" else "object")
        return out
    out["pass_rate"] = out["passed"] / out["messages"].where(out["messages"] > 0)
    overridden_share = out["failed_overridden"] / out["failed"].where(out["failed"] > 0)
    out["role"] = "unauthorised"
    out.loc[overridden_share.fillna(0) >= 0.5, "role"] = "forwarding"
    out.loc[out["pass_rate"].fillna(0) >= LEGIT_PASS_RATE, "role"] = "legitimate"
    out["at_risk"] = (out["failed"] - out["failed_overridden"]).clip(lower=0)
    out["at_risk_share"] = out["at_risk"] / out["messages"].where(out["messages"] > 0)
    return out


def _n(x: float) -> str:
    return f"{int(x):,}"


def verdict(domain: str, sources: pd.DataFrame, *, policy: str | None, pct: int | None, days: int,
            window_days: int = 30) -> Verdict:
    """Judge one domain from its classified sources over the window."""
    s = classify(sources) if "role" not in sources.columns else sources
    legit = s[s["role"] == "legitimate"]
    unauth = s[s["role"] == "unauthorised"]
    fwd = s[s["role"] == "forwarding"]
    reasons: list[str] = []
    if s.empty or days == 0:
        return Verdict(domain, NO_DATA, "warn", [f"No reports for {domain} in the last {window_days} days."])

    legit_msgs = float(legit["messages"].sum())
    loss = float(legit["at_risk"].sum())
    share = loss / legit_msgs if legit_msgs else 0.0
    worst = legit[legit["at_risk_share"] > SOURCE_MAX_LOSS].sort_values("at_risk", ascending=False)

    reasons.append(
        f"{len(legit)} legitimate source{'s' if len(legit) != 1 else ''} sent {_n(legit_msgs)} messages; "
        f"{_n(loss)} of them ({share:.2%}) fail DMARC and would be quarantined or rejected."
    )
    for _, row in worst.head(5).iterrows():
        reasons.append(
            f"{row['service']} fails DMARC for {_n(row['at_risk'])} of {_n(row['messages'])} messages "
            f"({row['at_risk_share']:.1%}): give it a DKIM key for {domain} or an aligned envelope sender first."
        )
    if not unauth.empty:
        reasons.append(
            f"{_n(unauth['failed'].sum())} messages from {len(unauth)} unauthorised source"
            f"{'s' if len(unauth) != 1 else ''} fail DMARC: enforcement would stop them (that is the point)."
        )
    if not fwd.empty:
        reasons.append(
            f"{_n(fwd['failed'].sum())} failing messages look forwarded (mailing lists, forwarders); "
            "receivers usually override the policy for these."
        )
    if days < MIN_DAYS:
        reasons.insert(0, f"Only {days} day{'s' if days != 1 else ''} of reports in the last {window_days}: "
                          f"judge after at least {MIN_DAYS}.")
        return Verdict(domain, NO_DATA, "warn", reasons, share)
    if pct is not None and pct < 100 and policy in ("quarantine", "reject"):
        reasons.append(f"The policy applies to only {pct}% of failing mail (pct={pct}); raise it to 100.")

    if policy == "reject" and (pct is None or pct >= 100):
        level = "good" if share <= REJECT_MAX_LOSS and worst.empty else "warn"
        if level == "warn":
            reasons.insert(0, "Already at p=reject, and legitimate mail is being lost: fix the sources below.")
        return Verdict(domain, ENFORCING, level, reasons, share)
    if share <= REJECT_MAX_LOSS and worst.empty:
        if policy in (None, "none"):
            reasons.append("From p=none, a week or two at p=quarantine first is a cheap safety net.")
        return Verdict(domain, READY_REJECT, "good", reasons, share)
    if share <= QUARANTINE_MAX_LOSS:
        if policy == "quarantine":
            reasons.insert(0, "Already at p=quarantine; fix the failing legitimate sources before p=reject.")
        return Verdict(domain, READY_QUARANTINE, "warn", reasons, share)
    return Verdict(domain, NOT_READY, "bad", reasons, share)
