"""Policy readiness: per domain, what p=quarantine / p=reject would have done over the last 30 days."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from dashboards import figures, ui
from dashboards.readiness import classify, verdict
from dmarclens.query import posture as q_posture
from dmarclens.query import traffic as q_traffic
from dmarclens.query.filters import Filters

WINDOW_DAYS = 30
COLOURS = {"good": "green", "warn": "orange", "bad": "red"}
ICONS = {"good": ":material/check_circle:", "warn": ":material/warning:", "bad": ":material/block:"}

view = ui.current_view()
ui.header("Policy readiness", None,
          f"Is it safe to enforce? What p=quarantine and p=reject would have done over the last {WINDOW_DAYS} "
          "days of reports to each source of your mail.")
if not view.has_data or view.filters.end is None:
    ui.no_data_yet()
    st.stop()

end = view.filters.end
window = Filters(domains=view.filters.domains, start=end - timedelta(days=WINDOW_DAYS - 1), end=end)
st.caption(f"Window: {window.start} → {window.end} (the {WINDOW_DAYS} days up to the end of the selected period).")
data = ui.fetch(sources=(q_posture.readiness_sources, window), summary=(q_traffic.domain_summary, window),
                days=(q_traffic.days_with_data, window), posture=(q_posture.posture, window.domains))
sources = classify(data["sources"])
summary: pd.DataFrame = data["summary"]
days = dict(zip(data["days"]["domain"], data["days"]["days"], strict=False))
posture: pd.DataFrame | None = data["posture"]

domains = [d for d in summary["domain"].tolist() if d in set(sources["domain"])] if not summary.empty else []
if not domains:
    st.info(f"No reports in the last {WINDOW_DAYS} days for the selected domains.", icon=":material/info:")
    st.stop()

verdicts = []
for dom in domains:
    row = summary[summary["domain"] == dom].iloc[0]
    pol = row["p"] if isinstance(row["p"], str) else None
    pct = int(row["pct"]) if pd.notna(row["pct"]) else None
    verdicts.append((dom, row, verdict(dom, sources[sources["domain"] == dom], policy=pol, pct=pct,
                                       days=int(days.get(dom, 0)), window_days=WINDOW_DAYS)))

overview = pd.DataFrame([{
    "domain": d, "policy": f"p={r['p']}" if isinstance(r["p"], str) else "–", "verdict": v.status,
    "legit_loss": v.loss_share, "messages": int(r["messages"]), "pass_rate": r["pass_rate"],
} for d, r, v in verdicts])
ui.table(overview, key="rd-overview", name="readiness", column_config={
    "domain": st.column_config.TextColumn("Domain"), "policy": st.column_config.TextColumn("Policy now"),
    "verdict": st.column_config.TextColumn("Verdict"),
    "legit_loss": st.column_config.NumberColumn("Legitimate mail lost under enforcement", format="percent"),
    "messages": ui.int_col("Messages"), "pass_rate": ui.rate_col("DMARC pass"),
})

role_cols = {
    "service": st.column_config.TextColumn("Source"), "role": st.column_config.TextColumn("Role"),
    "messages": ui.int_col("Messages"), "pass_rate": ui.rate_col("DMARC pass"), "failed": ui.int_col("Failing"),
    "failed_overridden": ui.int_col("Failing, forwarded"),
    "quarantine": ui.int_col("p=quarantine: to spam"), "reject": ui.int_col("p=reject: bounced"),
    "at_risk_share": st.column_config.NumberColumn("Share lost", format="percent"),
    "ips": ui.int_col("IPs"),
}
# One domain at a time: fifty domains' charts and tables on one page take seconds to draw and
# bury the answer. Default to the domain that most needs attention.
order = {"bad": 0, "warn": 1, "good": 2}
ranked = sorted(verdicts, key=lambda t: (order[t[2].level], -(t[2].loss_share or 0), t[0]))
st.divider()
names = [d for d, _, _ in ranked]
picked = st.selectbox("Domain", names, index=0, key="rd-domain",
                      help="Sorted with the domains that need work first") if len(names) > 1 else names[0]
for dom, _row, v in [t for t in ranked if t[0] == picked]:
    title, badge = st.columns([3, 2], vertical_alignment="center")
    title.subheader(ui.esc(dom))
    badge.markdown(f":{COLOURS[v.level]}-badge[{ICONS[v.level]} {v.status}]")
    for reason in v.reasons:
        st.markdown("- " + ui.esc(reason, 600))
    rows = sources[sources["domain"] == dom].copy()
    rows["quarantine"] = rows["at_risk"]
    rows["reject"] = rows["at_risk"]
    legit = rows[rows["role"] == "legitimate"]
    left, right = st.columns([2, 3])
    left.plotly_chart(figures.enforcement_bars(legit, "Legitimate sources under p=reject"), key=f"rd-bars-{dom}")
    with right:
        st.markdown("**Legitimate sources**")
        ui.table(legit, key=f"rd-legit-{dom}", name=f"readiness-legitimate-{dom}", column_config=role_cols,
                 column_order=["service", "messages", "pass_rate", "failed", "failed_overridden", "quarantine",
                               "reject", "at_risk_share", "ips"])
    others = rows[rows["role"] != "legitimate"]
    with st.expander(f"Other sources: forwarding and unauthorised ({len(others):,})"):
        ui.table(others, key=f"rd-other-{dom}", name=f"readiness-other-{dom}", column_config=role_cols,
                 column_order=["service", "role", "messages", "failed", "failed_overridden", "reject", "ips"])
    if posture is not None and not posture.empty:
        st.markdown("**DNS posture** (the live records, as `dmarclens posture` last saw them)")
        p_rows = posture[posture["domain"] == dom]
        if p_rows.empty:
            st.caption(f"No posture check stored for this domain yet: run `dmarclens posture {ui.esc(dom)}`.")
        else:
            check = p_rows.iloc[0]
            facts = {k: check.get(k) for k in ("checked_at", "dmarc_record", "policy_strength", "p", "sp", "np", "pct",
                                               "rua", "spf_record", "spf_lookups", "spf_all") if k in check}
            left, right = st.columns([1, 1])
            with left:
                ui.kv_table(facts, key=f"rd-posture-{dom}")
            with right:
                findings = check.get("findings")
                for item in list(findings) if findings is not None else []:
                    st.markdown("- " + ui.esc(item, 600))
                if findings is None or len(findings) == 0:
                    st.caption("No weaknesses found in the published records.")
            includes = ui.fetch(inc=(q_posture.posture_spf_includes, (int(check["check_id"]),)))["inc"]
            if includes is not None and not includes.empty:
                st.caption("SPF includes: multi-tenant platforms let any of their customers pass SPF as you; "
                           "unused ones are authorisation to remove.")
                ui.table(includes, key=f"rd-spf-{dom}", name=f"spf-includes-{dom}", height=260, column_config={
                    "multi_tenant": st.column_config.CheckboxColumn("Shared platform"),
                    "unused": st.column_config.CheckboxColumn("Unused"),
                    "messages": ui.int_col("Messages seen"), "last_seen": ui.date_col("Last seen"),
                })

if posture is None or posture.empty:
    st.divider()
    st.caption("DNS posture (the live DMARC/SPF/DKIM records and the shared platforms your SPF authorises) "
               "appears here once `dmarclens posture` has run.")
