"""Anomalies: what `dmarclens detect` found, most severe first, with evidence and acknowledge/dismiss."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import figures, ui
from dmarclens.core.errors import DmarcLensError
from dmarclens.query import anomalies as q_anomalies
from dmarclens.query import reports as q_reports

SEVERITY_COLOUR = {"critical": "red", "high": "red", "medium": "orange", "low": "blue", "info": "gray"}
STATUS = {"open": "Open", "acknowledged": "Acknowledged", "all": "All"}


def _identity(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _identity_text(value: Any) -> str:
    ident = _identity(value)
    return ", ".join(f"{k}={v}" for k, v in ident.items() if v not in (None, "", [])) or "–"


def _kind(kind: Any) -> str:
    text = str(kind or "").replace("_", " ").capitalize()
    return text.replace(" ip ", " IP ").replace("Ip ", "IP ").replace(" dkim", " DKIM")


view = ui.current_view()
ui.header("Anomalies", view, "Changes in who sends as your domains, most severe first — above all mail that "
          "passes DMARC from somewhere new.")
if not view.has_data:
    ui.no_data_yet()
    st.stop()
f = view.filters

open_all: pd.DataFrame | None = ui.fetch(open_all=(q_anomalies.anomalies, f, "open"))["open_all"]
if open_all is None:
    st.info(
        "Detection has not run on this database yet. Run `dmarclens detect` (it stores its findings here); "
        "`dmarclens demo` runs it for you.", icon=":material/radar:",
    )
    st.stop()

open_df: pd.DataFrame = open_all
sev = open_df["severity"].str.lower() if not open_df.empty else pd.Series(dtype=str)
c = st.columns(4)
c[0].metric("Open", ui.num(len(open_df)), border=True, help="Findings nobody has acknowledged yet")
c[1].metric("Critical or high", ui.num(int(sev.isin(["critical", "high"]).sum())), border=True)
passing = int((open_df["dmarc"] == "pass").sum()) if "dmarc" in open_df.columns else 0
c[2].metric("Passing DMARC", ui.num(passing), border=True,
            help="Open findings about mail that passed DMARC: it reaches inboxes, so it matters most")
c[3].metric("Messages involved", ui.num(open_df["messages"].sum() if not open_df.empty else 0), border=True)

status = st.segmented_control("Status", options=list(STATUS), format_func=STATUS.__getitem__, default="open",
                              key="status", bind="query-params") or "open"
found: pd.DataFrame = open_df if status == "open" else ui.fetch(found=(q_anomalies.anomalies, f, status))["found"]
if found.empty:
    st.success("Nothing to look at: no " + ("open " if status == "open" else "") + "anomalies for these filters.",
               icon=":material/check_circle:")
    st.stop()

table_df = found.copy()
table_df["identity_text"] = table_df["identity"].map(_identity_text) if "identity" in table_df else "–"
table_df["kind_text"] = table_df["kind"].map(_kind)
cols = ["severity", "kind_text", "domain", "identity_text", "dmarc", "first_day", "last_day", "messages", "expected",
        "status", "explanation"]
rows = ui.table(
    table_df, key=f"an-list-{status}", name="anomalies", select=True, height=360,
    column_order=[c for c in cols if c in table_df.columns],
    column_config={
        "severity": st.column_config.TextColumn("Severity"), "kind_text": st.column_config.TextColumn("Kind"),
        "domain": st.column_config.TextColumn("Domain"), "identity_text": st.column_config.TextColumn("Identity"),
        "dmarc": st.column_config.TextColumn("DMARC"), "first_day": ui.date_col("From"),
        "last_day": ui.date_col("To"), "messages": ui.int_col("Messages"),
        "expected": st.column_config.NumberColumn("Expected", format="%.0f"),
        "status": st.column_config.TextColumn("Status"),
        "explanation": st.column_config.TextColumn("Explanation", width="large"),
    },
)

id_col = "anomaly_id" if "anomaly_id" in found.columns else "id"
chosen_id: str | None = None
if rows and rows[0] < len(found):
    chosen_id = str(found.iloc[rows[0]][id_col])
    st.query_params["anomaly"] = chosen_id
elif "anomaly" in st.query_params:
    chosen_id = str(st.query_params["anomaly"])[:128]
else:
    chosen_id = str(found.iloc[0][id_col])
    st.caption("Showing the most severe finding; select a row to open another.")

a = ui.fetch(one=(q_anomalies.anomaly_by_id, chosen_id))["one"]
if a is None:
    st.warning("That anomaly is not in this database (any more).", icon=":material/search_off:")
    st.stop()

st.divider()
severity = str(a.get("severity") or "info").lower()
st.markdown(f":{SEVERITY_COLOUR.get(severity, 'gray')}-badge[{ui.esc(severity.upper())}] "
            f":gray-badge[{ui.esc(_kind(a.get('kind')))}] :gray-badge[{ui.esc(a.get('domain'))}] "
            f":gray-badge[DMARC {ui.esc(a.get('dmarc'))}] :gray-badge[{ui.esc(a.get('status'))}]")
with st.container(border=True):
    st.markdown("**" + ui.esc(a.get("explanation"), 1000) + "**")
    st.caption("Identity: " + ui.esc(_identity_text(a.get("identity")), 600))

first, last = a.get("first_day"), a.get("last_day")
m = st.columns(5)
m[0].metric("Messages", ui.num(a.get("messages")), border=True)
m[1].metric("Expected", ui.num(a.get("expected")) if a.get("expected") is not None else "–", border=True,
            help="What the baseline expected from this identity on those days")
m[2].metric("Passed DMARC", ui.num(a.get("passed")), border=True)
m[3].metric("Failed DMARC", ui.num(a.get("failed")), border=True)
span_days = (pd.Timestamp(last) - pd.Timestamp(first)).days + 1 if first and last else None
m[4].metric("Days", ui.num(span_days), border=True, help=f"{first} → {last}")

if first and last and view.first_day and view.last_day:
    start = max(view.first_day, pd.Timestamp(first).date() - timedelta(days=60))
    end = min(view.last_day, pd.Timestamp(last).date() + timedelta(days=7))
    series = ui.fetch(s=(q_anomalies.identity_series, str(a["domain"]), _identity(a.get("identity")), start, end,
                         list(a.get("ips") or [])))["s"]
    st.plotly_chart(figures.identity_vs_baseline(
        series, title="This identity's daily mail against its baseline", first_day=pd.Timestamp(first).date(),
        last_day=pd.Timestamp(last).date(),
        expected=(float(a["expected"]) / max(1, (pd.Timestamp(last) - pd.Timestamp(first)).days + 1))
        if a.get("expected") is not None else None,
    ), key="an-series")

left, right = st.columns(2)
with left:
    st.markdown("**IPs involved**")
    ips = list(a.get("ips") or [])
    ui.table(pd.DataFrame({"ip": ips}), key="an-ips", name=f"anomaly-{chosen_id}-ips",
             column_config={"ip": st.column_config.TextColumn("IP")})
    if ips:
        st.page_link("views/sources.py", label="Open the largest IP in Sources", icon=":material/dns:",
                     query_params={"ip": ips[0]})
with right:
    st.markdown("**Reports carrying the evidence**")
    reps = ui.fetch(r=(q_reports.reports_by_keys, list(a.get("report_keys") or [])))["r"]
    rep_rows = ui.table(reps, key=f"an-reports-{chosen_id}", name=f"anomaly-{chosen_id}-reports", select=True,
                        column_order=["begin_ts", "reporter", "report_id", "domain", "messages"],
                        column_config={"begin_ts": ui.ts_col("Begins"), "reporter": st.column_config.TextColumn(
                            "Reporter"), "report_id": st.column_config.TextColumn("Report ID"),
                            "messages": ui.int_col("Messages")})
    if rep_rows and rep_rows[0] < len(reps):
        st.page_link("views/reports.py", label="Open this report", icon=":material/description:",
                     query_params={"report": str(reps.iloc[rep_rows[0]]["report_key"])})
if a.get("details"):
    with st.expander("Numbers behind the verdict"):
        try:
            st.json(json.loads(a["details"]) if isinstance(a["details"], str) else a["details"], expanded=True)
        except ValueError:
            st.code(str(a["details"]))

st.subheader("Your call")
if a.get("status") == "acknowledged":
    st.success("Acknowledged " + ui.esc(a.get("acked_at")) + (": " + ui.esc(a.get("ack_note"), 500)
                                                               if a.get("ack_note") else "."),
               icon=":material/check_circle:")
else:
    with st.form(f"ack-{chosen_id}", border=True):
        note = st.text_input("Note (optional)", placeholder="e.g. new ESP onboarded by marketing", max_chars=500)
        b1, b2, _ = st.columns([1, 1, 3])
        ack = b1.form_submit_button("Acknowledge", type="primary", icon=":material/done:",
                                    help="Expected: stop alerting on this finding and its repeats")
        dismiss = b2.form_submit_button("Dismiss", icon=":material/block:",
                                        help="Not a real problem (false positive): stop alerting on it")
    if ack or dismiss:
        text = ("dismissed: " if dismiss else "") + (note or "").strip()
        try:
            ok = ui.acknowledge(chosen_id, text or None)
        except DmarcLensError as e:
            st.error(f"Could not record it: {e}")
        else:
            if ok:
                st.toast("Dismissed" if dismiss else "Acknowledged", icon=":material/done:")
                st.rerun()
            st.error("That anomaly no longer exists.")
