"""Ingest health: is the feed alive, what was turned away and why, which reporters went quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from dashboards import ui
from dmarclens.query import reports as q_reports

SILENT_MIN_DAYS = 3.0  # a daily reporter missing three reports is worth a look
FEED_STALE_DAYS = 3

view = ui.current_view()
ui.header("Ingest health", None, "Whether reports keep arriving, what could not be stored and why, "
          "and which reporters stopped sending.")

now = datetime.now(UTC)
hour = now.replace(minute=0, second=0, microsecond=0)  # stable cache key within the hour
data = ui.fetch(
    runs=(q_reports.ingest_runs, 50), rejected=(q_reports.rejected_items, 500), reasons=(q_reports.rejection_reasons,),
    counts_30d=(q_reports.ingest_item_counts, hour - timedelta(days=30)), counts_all=(q_reports.ingest_item_counts,),
    activity=(q_reports.reporter_activity, view.filters),
)
runs: pd.DataFrame = data["runs"]
activity: pd.DataFrame = data["activity"]
c30: dict[str, int] = data["counts_30d"]

if runs.empty:
    ui.no_data_yet()
    st.stop()

last_run = runs.iloc[0]
last_at = pd.Timestamp(last_run["started_at"]).to_pydatetime()
age = now - last_at
age_text = f"{age.days} d" if age.days else f"{int(age.total_seconds() // 3600)} h"
if age.total_seconds() < 3600:
    age_text = f"{max(1, int(age.total_seconds() // 60))} min"
silent = activity[
    (activity["silent_days"] >= SILENT_MIN_DAYS)
    & (activity["silent_days"] >= 3 * activity["typical_gap_hours"].fillna(24) / 24)
] if not activity.empty else activity

c = st.columns(5)
c[0].metric("Since last ingest", age_text, border=True, help=f"Started {last_at:%Y-%m-%d %H:%M} UTC")
c[1].metric("Stored (30 days)", ui.num(c30.get("stored", 0)), border=True, help="Reports newly stored")
c[2].metric("Duplicates (30 days)", ui.num(c30.get("duplicate", 0)), border=True,
            help="Re-sent copies recognised and counted once")
c[3].metric("Rejected (30 days)", ui.num(c30.get("rejected", 0)), border=True,
            help="Inputs that could not be parsed; reasons below")
c[4].metric("Silent reporters", ui.num(len(silent)), border=True,
            help="Reporters that missed at least three of their usual reports")

if view.last_day is not None and (now.date() - view.last_day).days > FEED_STALE_DAYS:
    st.warning(
        f"The newest report covers {view.last_day}: {(now.date() - view.last_day).days} days ago. "
        "If reports should be arriving daily, check that `dmarclens fetch` (or your ingest job) is running.",
        icon=":material/schedule:",
    )
if pd.isna(last_run["finished_at"]):
    st.warning("The latest run has no finish time: it is still running or was interrupted.",
               icon=":material/hourglass_top:")

st.subheader("Reporters that stopped sending")
if silent.empty:
    st.success("Every reporter is sending at its usual rhythm.", icon=":material/check_circle:")
else:
    st.caption("Silent for at least three of their usual intervals, counted back from the newest report stored.")
activity_cols = {
    "reporter": st.column_config.TextColumn("Reporter"), "domain": st.column_config.TextColumn("Domain"),
    "reports": ui.int_col("Reports"), "first_report": ui.ts_col("First report"),
    "last_report": ui.ts_col("Last report ends"),
    "typical_gap_hours": st.column_config.NumberColumn("Usual interval (h)", format="%.0f"),
    "silent_days": st.column_config.NumberColumn("Silent (days)", format="%.1f"),
}
if not silent.empty:
    ui.table(silent, key="ing-silent", name="silent-reporters", column_config=activity_cols)
with st.expander("All reporters and their rhythm"):
    ui.table(activity, key="ing-activity", name="reporter-activity", column_config=activity_cols)

st.subheader("Last runs")
ui.table(runs, key="ing-runs", name="ingest-runs", height=300, column_config={
    "started_at": ui.ts_col("Started"), "finished_at": ui.ts_col("Finished"),
    "command": st.column_config.TextColumn("Command"), "source_kind": st.column_config.TextColumn("Source"),
    "hostname": st.column_config.TextColumn("Host"),
    "items_seen": ui.int_col("Items"), "stored": ui.int_col("Stored"), "duplicates": ui.int_col("Duplicates"),
    "rejected": ui.int_col("Rejected"), "ignored": ui.int_col("Other kinds"), "records": ui.int_col("Rows"),
    "messages": ui.int_col("Messages"), "run_id": st.column_config.TextColumn("Run"),
})

st.subheader("Rejected and ignored inputs")
reasons: pd.DataFrame = data["reasons"]
if reasons.empty:
    st.success("Nothing has been rejected: every input was stored or recognised as a duplicate.",
               icon=":material/check_circle:")
else:
    st.caption("Rejected = could not be parsed (the file is left untouched); ignored = another report kind "
               "(failure/RUF, SMTP TLS), recorded but not counted.")
    ui.table(reasons, key="ing-reasons", name="rejection-reasons", column_config={
        "outcome": st.column_config.TextColumn("Outcome"), "reason": st.column_config.TextColumn("Reason"),
        "items": ui.int_col("Items"), "last_seen": ui.ts_col("Last seen"),
    })
    with st.expander("Every rejected or ignored item (newest 500)"):
        ui.table(data["rejected"], key="ing-rejected", name="rejected-items", column_config={
            "seen_at": ui.ts_col("Seen"), "origin": st.column_config.TextColumn("Origin"),
            "member": st.column_config.TextColumn("Part"), "reason": st.column_config.TextColumn("Reason"),
            "size_bytes": ui.int_col("Bytes"),
        })
