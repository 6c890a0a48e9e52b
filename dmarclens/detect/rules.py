"""Pure scoring: feature frames in, findings with severity and explanation out.

No database, no clock, no I/O: every function takes DataFrames from
``features`` (or plain values) and returns DataFrames or ``Finding`` objects,
so each rule can be tested with a hand-made frame and its thresholds read in
one place (``features.Params``, documented in docs/detection.md).

The principle behind severity: *passing* mail reaches inboxes, so a change in
passing mail from an authorized provider is worse than the same change in
failing mail; and inside an authorized provider, novelty alone (a new /24, a
new DKIM selector) is routine rotation unless it *adds* mail on top of the
provider's usual volume. A new range plus a net increase is the signature of
a compromised tenant, mailbox or API key.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dmarclens.detect.features import Features, Params
from dmarclens.detect.model import RANK, clamp_severity

if TYPE_CHECKING:
    import pandas as pd

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass
class Finding:
    """A finding before its evidence (IPs, reports) is attached.

    ``match`` tells ``features.evidence`` which mail belongs to the finding:
    identity filters (service, ip_range, env_from, dkim_domain, dkim_selector,
    header_from, org, env_to) and ``traffic`` (direct_pass, direct_fail_unauth,
    direct, any).
    """

    kind: str
    domain: str
    identity: dict[str, Any]
    first_day: date
    last_day: date
    messages: int
    expected: float
    passed: int
    failed: int
    severity: str
    score: float
    details: dict[str, Any] = field(default_factory=dict)
    match: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def n(value: float) -> str:
    """A count as people write it: 12,345."""
    return f"{int(round(value)):,}"


def pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def fmt_ratio(value: float) -> str:
    return f"{value:.1f}"


def passing_severity(excess: float, rel: float) -> str:
    """Severity of *additional* DMARC-passing mail: absolute size and size relative to the usual.

    ``excess`` is mail on top of the baseline on the worst day, ``rel`` that
    excess divided by the baseline (1.0 = the source doubled).
    """
    if excess >= 500 and rel >= 1.0:
        return "critical"
    if excess >= 200 and rel >= 0.5:
        return "high"
    if excess >= 50 and rel >= 0.2:
        return "medium"
    if excess >= 10:
        return "low"
    return "info"


def shift(severity: str, steps: int, *, floor: str = "info", ceiling: str = "critical") -> str:
    rank = max(RANK[floor], min(RANK[ceiling], RANK[severity] + steps))
    return clamp_severity(rank)


def episodes(days: list[date], gap: int = 1) -> list[tuple[date, date]]:
    """Group sorted days into runs; days at most ``gap`` apart belong together."""
    out: list[tuple[date, date]] = []
    for d in sorted(set(days)):
        if out and (d - out[-1][1]).days <= gap:
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


def _when(first: date, last: date) -> str:
    if first == last:
        return f"On {first.isoformat()} ({WEEKDAYS[first.weekday()]})"
    return f"From {first.isoformat()} to {last.isoformat()}"


def _judgeable(features: Features, domain: str, day: date, params: Params) -> bool:
    """A day can be judged once its domain has ``warmup_days`` of history."""
    row = _domain_row(features, domain)
    return row is not None and day >= row["first_day"] + timedelta(days=params.warmup_days)


def _domain_row(features: Features, domain: str) -> dict[str, Any] | None:
    df = features.domains
    if df.empty:
        return None
    hit = df[df["domain"] == domain]
    if hit.empty:
        return None
    row = hit.iloc[0].to_dict()
    row["first_day"] = as_date(row["first_day"])
    return row


def as_date(value: Any) -> Any:
    """DuckDB DATE columns arrive in pandas as Timestamps; rules compare plain dates."""
    if isinstance(value, datetime):  # pandas.Timestamp is a datetime
        return value.date()
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "NaT":
        return None
    return value


def _policy(features: Features, domain: str) -> str:
    row = _domain_row(features, domain)
    return str(row.get("policy_p") or "none") if row else "none"


def _domain_daily(features: Features, domain: str) -> float:
    row = _domain_row(features, domain)
    return float(row.get("daily_median") or 0.0) if row else 0.0


def _days(df: pd.DataFrame, col: str = "day") -> pd.DataFrame:
    if not df.empty and col in df.columns:
        df = df.copy()
        df[col] = [as_date(x) for x in df[col]]
    return df


# --------------------------------------------------------------------------- volume


def flag_volume(volume: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Days where an authorized service's passing mail is far above its per-reporter baseline.

    Two ways in: a one-day jump (robust z >= spike_z, ratio >= spike_ratio,
    excess >= spike_min_excess, and at least ``spike_over_max`` times the
    largest same weekday of the last eight weeks, so recurring campaigns are
    their own precedent), or a sustained rise: ``sustain_days`` days in a row
    each above expectation by 2 sigma and 30 %, whose excess *together* is
    significant (sum of excess / sqrt(sum of sigma^2) >= spike_z) -- the slow
    ramp a careful abuser uses to stay under one-day thresholds. The days of
    such a run all belong to the episode.
    """
    df = _days(volume)
    if df.empty:
        return df.assign(excess=[], ratio=[], z=[], flag=[], sustained=[])
    df = df.sort_values(["domain", "service", "day"]).reset_index(drop=True)
    df["excess"] = df["obs"] - df["exp"]
    df["ratio"] = df["obs"] / df["exp"].clip(lower=1.0)
    df["z"] = df["excess"] / df["sigma"].clip(lower=1.0)
    jump = (df["z"] >= params.spike_z) & (df["ratio"] >= params.spike_ratio) & (
        df["excess"] >= params.spike_min_excess
    ) & (df["obs"] >= params.spike_over_max * df["hmax"])
    k = params.sustain_days
    mild = (df["z"] >= 2.0) & (df["ratio"] >= 1.3) & (df["excess"] > 0)
    grp = df["domain"] + "\x1f" + df["service"]
    run = mild.astype(int).groupby([grp, (~mild).cumsum()]).cumsum()
    ex_k = df["excess"].where(mild, 0.0).groupby(grp).transform(lambda x: x.rolling(k, min_periods=1).sum())
    var_k = (df["sigma"] ** 2).where(mild, 0.0).groupby(grp).transform(lambda x: x.rolling(k, min_periods=1).sum())
    trigger = (run >= k) & (ex_k / var_k.clip(lower=1.0) ** 0.5 >= params.spike_z) & (
        ex_k >= 2 * params.spike_min_excess)
    sustained = trigger.copy()
    for back in range(1, k):  # the run's earlier days are part of the rise
        sustained |= trigger.groupby(grp).shift(-back, fill_value=False).astype(bool) & mild
    df["sustained"] = sustained & ~jump
    df["flag"] = jump | sustained
    return df


def flagged_volume(features: Features, params: Params) -> pd.DataFrame:
    """``flag_volume`` of the features' volume frame, computed once per run."""
    if "flagged_volume" not in features.extra:
        features.extra["flagged_volume"] = flag_volume(features.volume, params)
    return features.extra["flagged_volume"]


def volume_findings(features: Features, params: Params) -> list[Finding]:
    df = flagged_volume(features, params)
    if df.empty:
        return []
    out: list[Finding] = []
    flagged = df[df["flag"]]
    for (domain, service), rows in flagged.groupby(["domain", "service"]):
        for first, last in episodes(list(rows["day"])):
            ep = rows[(rows["day"] >= first) & (rows["day"] <= last)]
            peak = ep.loc[ep["excess"].idxmax()]
            rel = float(peak["excess"]) / max(float(peak["exp"]), 1.0)
            sev = passing_severity(float(peak["excess"]), rel)
            if bool(peak["sustained"]) and sev in ("info",):
                sev = "low"
            out.append(Finding(
                kind="volume_spike", domain=domain,
                identity={"service": service, "asn": _service_asn(features, domain, service)},
                first_day=first, last_day=last,
                messages=int(ep["obs"].sum()), expected=float(ep["exp"].sum()),
                passed=int(ep["obs"].sum()), failed=0, severity=sev, score=float(ep["z"].max()),
                details={
                    "peak_day": peak["day"].isoformat(), "peak_messages": int(peak["obs"]),
                    "peak_expected": round(float(peak["exp"]), 1), "peak_ratio": round(float(peak["ratio"]), 2),
                    "peak_z": round(float(peak["z"]), 1), "sustained": bool(ep["sustained"].any()),
                    "reporters_judged": list(peak["org_list"]) if peak.get("org_list") is not None else [],
                },
                match={"service": service, "traffic": "direct_pass"},
            ))
    return out


def _service_asn(features: Features, domain: str, service: str) -> int | None:
    df = features.services
    if df.empty:
        return None
    hit = df[(df["domain"] == domain) & (df["service"] == service)]["asn"].dropna()
    return int(hit.iloc[0]) if not hit.empty else None


def _service_context(features: Features, params: Params) -> pd.DataFrame:
    """Per domain, service, day: baseline and excess of the service's passing mail (for additivity)."""
    df = flagged_volume(features, params)
    if df.empty:
        return df
    return df[["domain", "service", "day", "obs", "exp", "sigma", "excess", "z", "flag"]]


# --------------------------------------------------------------------------- novelty inside providers


def _significant_excess(df: pd.DataFrame) -> pd.Series:
    """The provider's extra passing mail beyond two sigma of noise (0 when not significant)."""
    import pandas as pd

    excess = pd.to_numeric(df["excess"], errors="coerce").fillna(0.0)
    sigma = pd.to_numeric(df["sigma"], errors="coerce").fillna(0.0)
    return (excess - 2.0 * sigma).clip(lower=0.0)


def range_findings(features: Features, params: Params) -> list[Finding]:
    """New /24 or /48 ranges of an authorized provider sending passing mail.

    Severity follows *additivity*: the part of the range's mail that the
    provider's total shows on top of its baseline. Rotation (the provider moved
    mail to a new range) adds nothing and stays low.
    """
    import pandas as pd

    df = _days(_days(features.ranges), "first_day")
    if df.empty:
        return []
    df = df[(df["service_authorized"].fillna(False).astype(bool)) & (df["service"] != "Unknown network")]
    if df.empty:
        return []
    ctx = _service_context(features, params)
    if not ctx.empty:
        df = df.merge(ctx, on=["domain", "service", "day"], how="left")
    else:
        df = df.assign(obs=pd.NA, exp=pd.NA, sigma=pd.NA, excess=pd.NA, z=pd.NA, flag=False)
    # Several new ranges of one service on one day share that day's excess.
    day_new = df.groupby(["domain", "service", "day"])["dp"].transform("sum").clip(lower=1)
    excess = _significant_excess(df)
    df["additive"] = [min(float(dp), float(ex) * float(dp) / float(tot))
                      for dp, ex, tot in zip(df["dp"], excess, day_new, strict=True)]
    out: list[Finding] = []
    for (domain, service, ip_range), rows in df.groupby(["domain", "service", "ip_range"]):
        first = rows["first_day"].iloc[0]
        added_total = float(rows["additive"].sum())
        if not _judgeable(features, domain, first, params):
            continue
        dp_total = int(rows["dp"].sum())
        if dp_total < params.range_min_pass:
            continue
        peak = rows.loc[rows["additive"].idxmax()]
        exp_peak = float(peak["exp"]) if pd.notna(peak.get("exp")) else 0.0
        additive = float(peak["additive"])
        if exp_peak > 0:
            sev = passing_severity(additive, additive / exp_peak)
        else:
            sev = "low"
        if sev == "info":
            sev = "low" if dp_total >= params.range_min_pass else "info"
        days = sorted(rows["day"])
        spf_share = float(rows["dp_spf"].sum()) / max(dp_total, 1)
        out.append(Finding(
            kind="new_ip_range_in_authorized_provider", domain=domain,
            identity={"service": service, "asn": _service_asn(features, domain, service), "ip_range": ip_range},
            first_day=first, last_day=days[-1], messages=dp_total, expected=0.0,
            passed=dp_total, failed=0, severity=sev,
            score=float(additive / max(exp_peak, 1.0)),
            details={
                "peak_day": peak["day"].isoformat(), "peak_range_messages": int(peak["dp"]),
                "service_messages": None if pd.isna(peak.get("obs")) else int(peak["obs"]),
                "service_expected": None if pd.isna(peak.get("exp")) else round(float(peak["exp"]), 1),
                "added_messages": int(round(additive)), "added_total": int(round(added_total)),
                "spf_aligned_share": round(spf_share, 2),
            },
            match={"service": service, "ip_range": ip_range, "traffic": "direct_pass"},
        ))
    return out


def new_source_findings(features: Features, params: Params) -> list[Finding]:
    """Services never seen for the domain before, over their first ``newness_days`` days."""
    df = _days(_days(features.services), "first_day")
    if df.empty:
        return []
    df = df[(df["day"] >= df["first_day"]) & (df["day"] < df["first_day"] + timedelta(days=params.newness_days))]
    df = df[df["service"] != "Unknown network"]
    out: list[Finding] = []
    policy_cache: dict[str, str] = {}
    for (domain, service), rows in df.groupby(["domain", "service"]):
        first = rows["first_day"].iloc[0]
        if rows["day"].min() != first or not _judgeable(features, domain, first, params):
            continue
        dp = int(rows["direct_pass"].sum())
        df_fail = int(rows["direct_fail"].sum())
        peak_dp = float(rows["direct_pass"].max())
        peak_fail = float(rows["direct_fail"].max())
        daily = _domain_daily(features, domain)
        if dp >= params.new_source_min_pass:
            sev = "high" if peak_dp >= max(500.0, daily) else "medium"
            traffic = "direct_pass"
            messages, passed, failed = dp, dp, 0
        elif peak_fail >= 100:
            pol = policy_cache.setdefault(domain, _policy(features, domain))
            sev = "medium" if pol == "none" and peak_fail >= 500 else "low"
            traffic = "direct"
            messages, passed, failed = dp + df_fail, dp, df_fail
        else:
            continue
        out.append(Finding(
            kind="new_source", domain=domain,
            identity={"service": service, "asn": _service_asn(features, domain, service)},
            first_day=first, last_day=max(rows["day"]), messages=messages, expected=0.0,
            passed=passed, failed=failed, severity=sev, score=float(max(peak_dp, peak_fail)),
            details={"days_seen": int(len(rows)), "peak_passing": int(peak_dp), "peak_failing": int(peak_fail),
                     "domain_daily_median": round(daily, 1), "relayed": int(rows["relayed"].sum())},
            match={"service": service, "traffic": traffic},
        ))
    return out


IDENT_KEYS = {"envelope_from": "envelope_from", "header_from": "header_from"}


def identifier_findings(features: Features, params: Params, new_services: set[tuple[str, str]]) -> list[Finding]:
    """New envelope-from domains, DKIM signing domain/selector pairs and header-from names on passing mail.

    A new identifier carried by a brand-new service is part of that
    service's ``new_source`` finding and is not reported twice.
    """
    import pandas as pd

    df = _days(_days(_days(features.identifiers), "first_day"), "service_first_day")
    if df.empty:
        return []
    ctx = _service_context(features, params)
    if not ctx.empty:
        df = df.merge(ctx, on=["domain", "service", "day"], how="left")
    else:
        df = df.assign(obs=pd.NA, exp=pd.NA, excess=pd.NA, sigma=pd.NA)
    out: list[Finding] = []
    for (domain, typ, val), rows in df.groupby(["domain", "typ", "val"]):
        first = rows["first_day"].iloc[0]
        if not _judgeable(features, domain, first, params):
            continue
        if typ == "header_from" and val == domain:
            continue
        services = rows.groupby("service")["dp"].sum().sort_values(ascending=False)
        main = str(services.index[0])
        if (domain, main) in new_services:
            continue
        total = int(rows["dp"].sum())
        if total < params.identifier_min_pass:
            continue
        main_rows = rows[rows["service"] == main]
        excess = _significant_excess(main_rows)
        additive_by_day = [min(float(a), float(b)) for a, b in zip(main_rows["dp"], excess, strict=True)]
        added_total = float(sum(additive_by_day))
        i = max(range(len(additive_by_day)), key=lambda k: additive_by_day[k])
        additive = additive_by_day[i]
        exp_val = main_rows["exp"].iloc[i]
        exp_peak = float(exp_val) if pd.notna(exp_val) else 0.0
        authorized = bool(rows["service_authorized"].fillna(False).iloc[0])
        if exp_peak > 0:
            sev = passing_severity(additive, additive / exp_peak)
        else:
            daily = _domain_daily(features, domain)
            peak = float(main_rows["dp"].max())
            sev = "medium" if peak >= max(50.0, 0.2 * daily) else "low"
        if sev == "info":
            sev = "low"
        identity: dict[str, Any] = {"service": main}
        match: dict[str, Any] = {"traffic": "direct_pass"}
        if typ == "dkim":
            d, _, s = str(val).partition(":")
            identity.update(dkim_domain=d, dkim_selector=s or None)
            match.update(dkim_domain=d, dkim_selector=s)
            what = "dkim"
        else:
            identity[typ] = val
            match["env_from" if typ == "envelope_from" else "header_from"] = val
            what = typ
        out.append(Finding(
            kind="new_identifier", domain=domain, identity=identity,
            first_day=first, last_day=max(rows["day"]), messages=total, expected=0.0,
            passed=total, failed=0, severity=sev, score=float(additive),
            details={"identifier": what, "value": val, "services": {str(k): int(v) for k, v in services.items()},
                     "service_authorized": authorized, "added_messages": int(round(additive)),
                     "added_total": int(round(added_total)),
                     "service_expected": round(exp_peak, 1) if exp_peak else None},
            match=match,
        ))
    return out


# --------------------------------------------------------------------------- failing mail


def spoof_findings(features: Features, params: Params) -> list[Finding]:
    """Bursts of failing mail from services not authorized for the domain (per-reporter baselines)."""
    df = _days(features.spoof)
    if df.empty:
        return []
    df = df.copy()
    df["excess"] = df["obs"] - df["exp"]
    df["ratio"] = df["obs"] / df["exp"].clip(lower=1.0)
    df["z"] = df["excess"] / df["sigma"].clip(lower=1.0)
    hit = df[(df["z"] >= params.spoof_z) & (df["ratio"] >= params.spoof_ratio)
             & (df["excess"] >= params.spoof_min_excess)]
    out: list[Finding] = []
    for domain, rows in hit.groupby("domain"):
        pol = _policy(features, domain)
        for first, last in episodes(list(rows["day"])):
            if not _judgeable(features, domain, first, params):
                continue
            ep = rows[(rows["day"] >= first) & (rows["day"] <= last)]
            peak = ep.loc[ep["excess"].idxmax()]
            excess = float(peak["excess"])
            sev = "high" if excess >= 2000 else "medium" if excess >= 500 else "low"
            if pol == "none":
                sev = shift(sev, +1, ceiling="high")
            elif pol == "reject":
                sev = shift(sev, -1, floor="low")
            if excess >= 500 and sev == "low":
                sev = "medium"
            out.append(Finding(
                kind="spoofing_burst", domain=domain, identity={"header_from": domain},
                first_day=first, last_day=last, messages=int(ep["obs"].sum()), expected=float(ep["exp"].sum()),
                passed=0, failed=int(ep["obs"].sum()), severity=sev, score=float(ep["z"].max()),
                details={"peak_day": peak["day"].isoformat(), "peak_messages": int(peak["obs"]),
                         "peak_expected": round(float(peak["exp"]), 1), "peak_ratio": round(float(peak["ratio"]), 1),
                         "policy": pol},
                match={"traffic": "direct_fail_unauth"},
            ))
    return out


def regression_findings(features: Features, params: Params) -> list[Finding]:
    """A source whose mail used to pass DMARC now mostly fails (broken DKIM key, SPF include removed)."""
    df = _days(features.regression)
    if df.empty:
        return []
    out: list[Finding] = []
    for (domain, service, env_from), rows in df.groupby(["domain", "service", "env_from"]):
        for first, last in episodes(list(rows["day"])):
            if not _judgeable(features, domain, first, params):
                continue
            ep = rows[(rows["day"] >= first) & (rows["day"] <= last)]
            total = int(ep["msgs"].sum())
            passed = int(ep["passed"].sum())
            failed = total - passed
            h0 = ep.iloc[0]
            h_rate = float(h0["h_rate"])
            h_dkim = float(h0["h_dkim"]) / max(float(h0["h_msgs"]), 1.0)
            h_spf = float(h0["h_spf"]) / max(float(h0["h_msgs"]), 1.0)
            now_dkim = float(ep["dkim_ok"].sum()) / max(total, 1)
            now_spf = float(ep["spf_ok"].sum()) / max(total, 1)
            pol = _policy(features, domain)
            daily = _domain_daily(features, domain)
            peak_fail = float((ep["msgs"] - ep["passed"]).max())
            if pol in ("quarantine", "reject"):
                sev = "high" if peak_fail >= max(500.0, 0.3 * daily) else "medium"
            else:
                sev = "medium" if peak_fail >= 100 else "low"
            out.append(Finding(
                kind="auth_regression", domain=domain,
                identity={"service": service, "asn": _service_asn(features, domain, service),
                          "envelope_from": env_from or None},
                first_day=first, last_day=last, messages=failed, expected=round((1 - h_rate) * total, 1),
                passed=passed, failed=failed, severity=sev, score=float(h_rate - passed / max(total, 1)),
                details={"pass_rate": round(passed / max(total, 1), 3), "history_pass_rate": round(h_rate, 3),
                         "dkim_aligned_rate": round(now_dkim, 3), "history_dkim_aligned_rate": round(h_dkim, 3),
                         "spf_aligned_rate": round(now_spf, 3), "history_spf_aligned_rate": round(h_spf, 3),
                         "history_days": int(h0["h_days"]), "total_messages": total, "policy": pol},
                match={"service": service, "env_from": env_from, "traffic": "any"},
            ))
    return out


# --------------------------------------------------------------------------- returning and reaching out


def dormant_findings(features: Features, params: Params) -> list[Finding]:
    """A service that sent direct mail before, went silent for ``dormant_days``, and is back."""
    df = _days(_days(features.services), "prev_direct_day")
    if df.empty or "prev_direct_day" not in df.columns:
        return []
    df = df[df["prev_direct_day"].notna() & (df["direct"] >= params.dormant_min_messages)]
    df = df[df["direct_days_before"] >= 3]
    gap = [(d - p).days for d, p in zip(df["day"], df["prev_direct_day"], strict=True)]
    df = df.assign(gap=gap)
    df = df[df["gap"] >= params.dormant_days]
    out: list[Finding] = []
    for row in df.itertuples(index=False):
        if not _judgeable(features, row.domain, row.day, params) or row.service == "Unknown network":
            continue
        dp, fail = int(row.direct_pass), int(row.direct_fail)
        if dp >= params.dormant_min_messages:
            sev = "high" if dp >= 500 else "medium"
            traffic = "direct_pass"
        else:
            sev = "low"
            traffic = "direct"
        out.append(Finding(
            kind="dormant_source_revived", domain=row.domain,
            identity={"service": row.service, "asn": None if _nan(row.asn) else int(row.asn)},
            first_day=row.day, last_day=row.day, messages=dp + fail, expected=0.0, passed=dp, failed=fail,
            severity=sev, score=float(row.gap),
            details={"silent_days": int(row.gap), "last_seen": row.prev_direct_day.isoformat(),
                     "active_days_before": int(row.direct_days_before)},
            match={"service": row.service, "traffic": traffic},
        ))
    return out


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def audience_findings(features: Features, params: Params) -> list[Finding]:
    """An established, authorized service suddenly reaching receivers or recipient domains it never reached."""
    out: list[Finding] = []
    org = _days(_days(_days(features.audience_org), "first_day"), "org_first")
    if not org.empty:
        org = org[org["service_authorized"].fillna(False).astype(bool)
                  & (org["org_days_before"] >= 14) & (org["service_pass_days"].fillna(0) >= 14)]
        for (domain, service, reporter), rows in org.groupby(["domain", "service", "org"]):
            first = rows["first_day"].iloc[0]
            total = int(rows["dp"].sum())
            peak = float(rows["dp"].max())
            if peak < params.audience_min_pass or not _judgeable(features, domain, first, params):
                continue
            sev = "medium" if peak >= 200 else "low"
            out.append(Finding(
                kind="audience_shift", domain=domain, identity={"service": service, "reporter": reporter},
                first_day=first, last_day=max(rows["day"]), messages=total, expected=0.0, passed=total,
                failed=0, severity=sev, score=peak,
                details={"reporter_days_before": int(rows["org_days_before"].iloc[0]), "peak_messages": int(peak)},
                match={"service": service, "org": reporter, "traffic": "direct_pass"},
            ))
    to = _days(features.audience_to)
    if not to.empty:
        to = to[(to["h_days"] >= params.min_history) & (to["new_to"] >= params.envelope_to_min_new)]
        to = to[to["new_to"] >= 3 * (to["h_new_median"].fillna(0) + 1)]
        to = to[to["new_to_msgs"] >= params.audience_min_pass]
        for row in to.itertuples(index=False):
            if not _judgeable(features, row.domain, row.day, params):
                continue
            sev = "medium" if row.new_to_msgs >= 200 else "low"
            names = [str(x) for x in (row.new_list if row.new_list is not None else [])][:10]
            out.append(Finding(
                kind="audience_shift", domain=row.domain,
                identity={"service": row.service, "asn": _service_asn(features, row.domain, row.service)},
                first_day=row.day, last_day=row.day, messages=int(row.new_to_msgs),
                expected=float(row.h_new_median or 0.0), passed=int(row.new_to_msgs), failed=0,
                severity=sev, score=float(row.new_to),
                details={"new_recipient_domains": int(row.new_to), "examples": names,
                         "usual_new_per_day": float(row.h_new_median or 0.0)},
                match={"service": row.service, "traffic": "direct_pass"},
            ))
    return out


# --------------------------------------------------------------------------- lookalikes

_HOMOGLYPHS = (("rn", "m"), ("vv", "w"), ("0", "o"), ("1", "l"), ("3", "e"), ("5", "s"), ("@", "a"), ("|", "l"))


def _skeleton(label: str) -> str:
    text = unicodedata.normalize("NFKD", label.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    for a, b in _HOMOGLYPHS:
        text = text.replace(a, b)
    return text.replace("i", "l")


def _edit_distance(a: str, b: str, limit: int = 3) -> int:
    """Damerau-Levenshtein distance (adjacent swaps count 1), cut off at ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def _registrable_label(name: str) -> tuple[str, str]:
    """(label, suffix) for a name: 'mail.examp1e.co.uk' -> ('examp1e', 'co.uk'), roughly."""
    parts = [p for p in name.lower().strip(".").split(".") if p]
    if len(parts) >= 3 and len(parts[-1]) == 2 and parts[-2] in {"co", "com", "org", "net", "ac", "gov", "ne"}:
        return parts[-3], ".".join(parts[-2:])
    if len(parts) >= 2:
        return parts[-2], parts[-1]
    return (parts[0] if parts else ""), ""


def lookalike(domain: str, candidate: str) -> str | None:
    """Why ``candidate`` imitates ``domain`` (None if it does not).

    Catches homoglyph swaps (examp1e, exarnple), one or two typos, the brand
    with a word added (example-billing, secure-example) and the brand under
    another suffix (example.co). Names under the domain itself are not
    lookalikes: they are the domain.
    """
    domain, candidate = domain.lower().strip("."), candidate.lower().strip(".")
    if not candidate or candidate == domain or candidate.endswith("." + domain) or domain.endswith("." + candidate):
        return None
    d_label, d_suffix = _registrable_label(domain)
    c_label, c_suffix = _registrable_label(candidate)
    if len(d_label) < 4 or not c_label:
        return None
    if c_label == d_label and c_suffix != d_suffix:
        return f"same name under another suffix ({c_label}.{c_suffix})"
    if _skeleton(c_label) == _skeleton(d_label) and c_label != d_label:
        return f"look-alike characters ({c_label} for {d_label})"
    dist = _edit_distance(c_label, d_label)
    if c_label != d_label and dist <= (1 if len(d_label) < 7 else 2):
        return f"{dist} character{'s' if dist > 1 else ''} away from {d_label}"
    tokens = [t for t in re.split(r"[-_.0-9]+", c_label) if t]
    if d_label in tokens and c_label != d_label:
        return f"contains {d_label} with extra words ({c_label})"
    return None


def lookalike_findings(features: Features, params: Params) -> list[Finding]:
    df = _days(_days(_days(features.lookalikes), "first_day"), "day_max")
    if df.empty:
        return []
    out: list[Finding] = []
    for row in df.itertuples(index=False):
        why = lookalike(row.domain, str(row.val))
        if not why or not _judgeable(features, row.domain, row.first_day, params):
            continue
        passed, msgs = int(row.passed), int(row.msgs)
        sev = "high" if passed > 0 else "medium" if msgs >= 10 else "low"
        key = {"envelope_from": "envelope_from", "dkim_domain": "dkim_domain", "header_from": "header_from"}[row.typ]
        match_key = {"envelope_from": "env_from", "dkim_domain": "dkim_domain", "header_from": "header_from"}[row.typ]
        out.append(Finding(
            kind="lookalike_identifier", domain=row.domain, identity={key: row.val},
            first_day=row.first_day, last_day=row.day_max, messages=msgs, expected=0.0,
            passed=passed, failed=msgs - passed, severity=sev, score=float(msgs),
            details={"field": row.typ, "value": row.val, "why": why},
            match={match_key: row.val, "traffic": "direct"},
        ))
    return out


# --------------------------------------------------------------------------- explaining best


def explain_best(findings: list[Finding]) -> list[Finding]:
    """Keep the layer that explains a change best; drop findings another one fully explains.

    * A provider's volume spike whose extra mail came from new ranges or new
      identifiers (of that provider, on those days) is told once, by the
      finer finding, which takes over the spike's severity if it is higher;
    * a failing new source inside a spoofing burst is part of the burst;
    * a volume spike in the first week of a new or revived source is part of
      that arrival (its baseline is the silence before).
    """
    finer = [f for f in findings if f.kind in ("new_ip_range_in_authorized_provider", "new_identifier")]
    bursts = [f for f in findings if f.kind == "spoofing_burst"]
    arrivals = [f for f in findings if f.kind in ("new_source", "dormant_source_revived")]
    keep: list[Finding] = []
    for f in findings:
        if f.kind == "volume_spike":
            came = [g for g in arrivals if g.domain == f.domain and g.identity.get("service") == f.identity.get("service")
                    and timedelta(0) <= f.first_day - g.first_day < timedelta(days=7)]
            if came:  # a source that just (re)appeared: its first days are not a "spike"
                g = came[0]
                if RANK[f.severity] > RANK[g.severity]:
                    g.severity = f.severity
                g.details["volume_after_arrival"] = {"messages": f.messages, "expected": round(f.expected, 1)}
                continue
        if f.kind == "new_source" and not f.passed and any(
            b.domain == f.domain and b.first_day <= f.last_day and b.last_day >= f.first_day for b in bursts
        ):
            continue  # a failing newcomer during a spoofing burst is part of the burst
        if f.kind != "volume_spike":
            keep.append(f)
            continue
        service = f.identity.get("service")
        related = [g for g in finer if g.domain == f.domain and g.identity.get("service") == service
                   and g.first_day <= f.last_day and g.last_day >= f.first_day]
        excess = max(f.messages - f.expected, 1.0)
        explained = sum(g.details.get("added_total", 0) for g in related)
        if related and explained >= 0.5 * excess:
            best = max(related, key=lambda g: g.details.get("added_messages", 0))
            if RANK[f.severity] > RANK[best.severity]:
                best.severity = f.severity
            best.details["explains_volume_spike"] = {
                "first_day": f.first_day.isoformat(), "last_day": f.last_day.isoformat(),
                "messages": f.messages, "expected": round(f.expected, 1),
            }
            continue
        keep.append(f)
    return keep


# --------------------------------------------------------------------------- explanations


def explanation(f: Finding, ips: int = 0) -> str:
    """One plain sentence for the domain owner, citing the numbers stored with the finding."""
    d = f.details
    when = _when(f.first_day, f.last_day)
    svc = f.identity.get("service", "an unknown sender")
    if f.kind == "volume_spike":
        how = "kept rising day after day" if d.get("sustained") else "jumped"
        return (
            f"{when}, DMARC-passing mail for {f.domain} from {svc} {how}: {n(f.messages)} messages against "
            f"{n(f.expected)} expected from the same reporters (peak {d['peak_day']}: {n(d['peak_messages'])} vs "
            f"{n(d['peak_expected'])}, {fmt_ratio(d['peak_ratio'])}x); passing mail reaches inboxes, so check "
            f"whether an account, tenant or API key of {svc} is being abused."
        )
    if f.kind == "new_ip_range_in_authorized_provider":
        ctx = ""
        if d.get("service_messages") is not None and d.get("service_expected") is not None:
            ctx = (f"; on {d['peak_day']} {svc} sent {n(d['service_messages'])} passing messages in all against "
                   f"{n(d['service_expected'])} expected, so about {n(d['added_messages'])} came on top of the usual")
        tail = (" (the pattern of a compromised account or tenant)" if RANK[f.severity] >= RANK["medium"]
                else " (providers rotate ranges, so this alone is routine)")
        return (
            f"{when}, {n(f.messages)} DMARC-passing messages for {f.domain} came from "
            f"{f.identity.get('ip_range')}, a {svc} range never seen sending for this domain{ctx}{tail}."
        )
    if f.kind == "new_source":
        if f.passed:
            return (
                f"{when}, {svc} started sending DMARC-passing mail for {f.domain}: {n(f.passed)} messages from "
                f"{ips} address{'es' if ips != 1 else ''} in its first {d['days_seen']} day"
                f"{'s' if d['days_seen'] != 1 else ''}, from a service never seen for this domain; if nobody "
                f"authorized {svc}, its SPF include or DKIM key is being misused."
            )
        return (
            f"{when}, {svc}, never seen for {f.domain} before, sent {n(f.messages)} messages of which "
            f"{n(f.failed)} failed DMARC."
        )
    if f.kind == "new_identifier":
        what = {"dkim": "DKIM signature", "envelope_from": "envelope-from (Return-Path) domain",
                "header_from": "From: name"}[d["identifier"]]
        value = d["value"].replace(":", " selector ") if d["identifier"] == "dkim" else d["value"]
        ctx = ""
        if d.get("service_expected"):
            ctx = (f"; about {n(d['added_messages'])} of them came on top of {svc}'s usual "
                   f"{n(d['service_expected'])} a day")
        return (
            f"{when}, {n(f.messages)} DMARC-passing messages for {f.domain} used the {what} {value}, "
            f"never seen before, mostly through {svc}{ctx}."
        )
    if f.kind == "spoofing_burst":
        pol = d.get("policy", "none")
        fate = {"none": "and p=none lets them reach inboxes", "quarantine": "and receivers quarantine them",
                "reject": "and receivers reject them"}.get(pol, "")
        return (
            f"{when}, {n(f.messages)} messages claiming to be from {f.domain} failed DMARC from {ips} "
            f"address{'es' if ips != 1 else ''} of senders never authorized for it, against {n(f.expected)} "
            f"expected from the same reporters (peak {d['peak_day']}: {n(d['peak_messages'])} vs "
            f"{n(d['peak_expected'])}), {fate}."
        )
    if f.kind == "auth_regression":
        total = d["total_messages"]
        why = []
        if d["history_dkim_aligned_rate"] - d["dkim_aligned_rate"] >= 0.3:
            why.append(f"aligned DKIM fell from {pct(d['history_dkim_aligned_rate'])} to {pct(d['dkim_aligned_rate'])}")
        if d["history_spf_aligned_rate"] - d["spf_aligned_rate"] >= 0.3:
            why.append(f"aligned SPF fell from {pct(d['history_spf_aligned_rate'])} to {pct(d['spf_aligned_rate'])}")
        env = f" (envelope-from {f.identity['envelope_from']})" if f.identity.get("envelope_from") else ""
        because = f": {' and '.join(why)}" if why else ""
        return (
            f"{when}, {n(f.failed)} of {n(total)} messages for {f.domain} from {svc}{env} failed DMARC; "
            f"on its previous {d['history_days']} active days this source passed a median "
            f"{pct(d['history_pass_rate'])} a day"
            f"{because}, so legitimate mail is now being "
            f"{'rejected or quarantined' if d.get('policy') in ('quarantine', 'reject') else 'marked as failing'}."
        )
    if f.kind == "dormant_source_revived":
        return (
            f"{when}, {svc} sent {n(f.messages)} messages for {f.domain} ({n(f.passed)} passing DMARC) after "
            f"{d['silent_days']} days of silence (last seen {d['last_seen']}); check that this old sender "
            f"should still be sending."
        )
    if f.kind == "audience_shift":
        if "reporter" in f.identity:
            return (
                f"{when}, {f.identity['reporter']} reported {n(f.messages)} DMARC-passing messages for {f.domain} "
                f"from {svc} for the first time, although it has reported on this domain for "
                f"{d['reporter_days_before']} days: {svc}'s mail is reaching new recipients."
            )
        ex = ", ".join(d.get("examples", [])[:5])
        return (
            f"{when}, {svc} sent {n(f.messages)} DMARC-passing messages for {f.domain} to "
            f"{d['new_recipient_domains']} recipient domains it never mailed before (usually "
            f"{n(d['usual_new_per_day'])} a day), such as {ex}."
        )
    if f.kind == "lookalike_identifier":
        field_name = {"envelope_from": "envelope-from", "dkim_domain": "DKIM signing domain",
                      "header_from": "From: domain"}[d["field"]]
        return (
            f"{when}, {n(f.messages)} messages for {f.domain} used the {field_name} {d['value']}, a look-alike "
            f"of {f.domain} ({d['why']}); {n(f.passed)} passed DMARC."
        )
    if f.kind == "contract_violation":
        return str(d.get("sentence") or f"{when}, mail for {f.domain} broke the senders.toml contract.")
    return f"{when}, {f.kind} for {f.domain}."
