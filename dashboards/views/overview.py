"""Overview: per domain, how much mail, how much passes DMARC, what receivers did."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import figures, ui
from dmarclens.query import anomalies as q_anomalies
from dmarclens.query import traffic as q_traffic

view = ui.current_view()
ui.header("Overview", view, "How much mail uses your domains, how much of it passes DMARC, and what receivers did.")
if not view.has_data:
    ui.no_data_yet()
    st.stop()

f = view.filters
prev = view.previous()
calls: dict[str, ui.Call] = {
    "daily": (q_traffic.overview_daily, f),
    "totals": (q_traffic.totals, f),
    "domains": (q_traffic.domain_summary, f),
    "anomalies": (q_anomalies.open_anomaly_counts, f),
}
if prev is not None:
    calls["prev"] = (q_traffic.totals, prev)
data = ui.fetch(**calls)
t, p = data["totals"], data.get("prev")
daily: pd.DataFrame = data["daily"]
anomaly_counts: dict[str, int] | None = data["anomalies"]

vs = " vs the previous period of the same length"

c = st.columns(6)
c[0].metric("Messages", ui.compact(t["messages"]), ui.delta_count(t["messages"], p and p["messages"]),
            delta_color="off", border=True,
            help=f"{t['messages']:,} messages reported by receivers in the period" + (vs if p else ""))
c[1].metric("DMARC pass", ui.pct(t["pass_rate"]), ui.delta_pct_points(t["pass_rate"], p and p["pass_rate"]),
            border=True, help="Messages that passed DMARC (aligned DKIM or SPF)" + (vs if p else ""))
c[2].metric("DKIM aligned", ui.pct(t["dkim_rate"]), ui.delta_pct_points(t["dkim_rate"], p and p["dkim_rate"]),
            border=True, help="Messages with a passing DKIM signature of your domain")
c[3].metric("SPF aligned", ui.pct(t["spf_rate"]), ui.delta_pct_points(t["spf_rate"], p and p["spf_rate"]),
            border=True, help="Messages whose envelope sender passed SPF and matches your domain")
c[4].metric("Failing DMARC", ui.compact(t["failed"]), ui.delta_count(t["failed"], p and p["failed"]),
            delta_color="inverse", border=True,
            help=f"{t['failed']:,} messages failed DMARC: spoofing, forwarding or a broken sender")
if anomaly_counts is None:
    c[5].metric("Anomalies", "–", border=True, help="Detection has not run on this database yet: `dmarclens detect`")
else:
    c[5].metric("Anomalies", ui.num(sum(anomaly_counts.values())), border=True,
                help="Findings of `dmarclens detect` not yet acknowledged")

left, right = st.columns(2)
left.plotly_chart(figures.pass_fail_per_day(daily), key="ov-msgs")
right.plotly_chart(figures.pass_rate_per_day(daily), key="ov-rate")

st.subheader("Domains")
doms: pd.DataFrame = data["domains"].copy()
if not doms.empty:
    def _policy(row: pd.Series) -> str:
        if not isinstance(row["p"], str):
            return "–"
        extra = [f"sp={row['sp']}"] if isinstance(row["sp"], str) and row["sp"] != row["p"] else []
        if pd.notna(row["pct"]) and int(row["pct"]) != 100:
            extra.append(f"pct={int(row['pct'])}")
        return f"p={row['p']}" + (f" ({', '.join(extra)})" if extra else "")

    doms["policy"] = doms.apply(_policy, axis=1)
    if anomaly_counts is not None:
        doms["open_anomalies"] = [anomaly_counts.get(d, 0) for d in doms["domain"]]
order = ["domain", "policy", "messages", "pass_rate", "dkim_rate", "spf_rate", "failed", "quarantined", "rejected",
         "sources", "open_anomalies", "reports", "last_report"]
ui.table(
    doms, key="ov-domains", name="domains", column_order=[c for c in order if c in doms.columns],
    column_config={
        "domain": st.column_config.TextColumn("Domain"),
        "policy": st.column_config.TextColumn("Published policy", help="Most recent policy receivers saw"),
        "messages": ui.int_col("Messages"),
        "pass_rate": ui.rate_col("DMARC", "Share passing DMARC"),
        "dkim_rate": ui.rate_col("DKIM", "Share with aligned DKIM pass"),
        "spf_rate": ui.rate_col("SPF", "Share with aligned SPF pass"),
        "failed": ui.int_col("Failing"),
        "quarantined": ui.int_col("Quarantined"),
        "rejected": ui.int_col("Rejected"),
        "sources": ui.int_col("IPs"),
        "open_anomalies": ui.int_col("Anomalies", "Open anomalies"),
        "reports": ui.int_col("Reports"),
        "last_report": ui.ts_col("Newest report"),
    },
)

left, right = st.columns(2)
left.plotly_chart(figures.dispositions_per_day(daily), key="ov-disp")
right.plotly_chart(figures.aligned_rates_per_day(daily), key="ov-aligned")
