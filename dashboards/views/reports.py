"""Reports: who reports on the domains, the report list, one report's records, its raw XML."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import figures, ui
from dmarclens.query import reports as q_reports
from dmarclens.query import traffic as q_traffic

RAW_XML_SHOWN = 400_000  # characters drawn on the page; the download has all of it

view = ui.current_view()
ui.header("Reports", view, "The aggregate reports receivers sent, exactly as stored. Select a report to see its rows.")
if not view.has_data:
    ui.no_data_yet()
    st.stop()
f = view.filters

reporters: pd.DataFrame = ui.fetch(reporters=(q_traffic.reporters, f))["reporters"]
c = st.columns(4)
c[0].metric("Reporters", ui.num(len(reporters)), border=True, help="Receiving organisations that sent reports")
c[1].metric("Reports", ui.num(reporters["reports"].sum() if not reporters.empty else 0), border=True)
c[2].metric("Messages covered", ui.num(reporters["messages"].sum() if not reporters.empty else 0), border=True)
newest = reporters["last_report"].max() if not reporters.empty else None
c[3].metric("Newest report ends", f"{newest:%b %d}" if newest is not None and pd.notna(newest) else "–",
            border=True, help=f"{newest}" if newest is not None else None)

left, right = st.columns([2, 3])
with left:
    left.plotly_chart(figures.count_bar(reporters, "reporter", "messages", "Messages covered per reporter"),
                      key="rep-bar")
with right:
    st.subheader("Reporters")
    ui.table(reporters, key="rep-reporters", name="reporters", height=320, column_config={
        "reporter": st.column_config.TextColumn("Reporter"), "reports": ui.int_col("Reports"),
        "messages": ui.int_col("Messages"), "first_report": ui.ts_col("First report"),
        "last_report": ui.ts_col("Last report ends"), "formats": st.column_config.TextColumn("Formats"),
    })

st.subheader("Report list")
names = reporters["reporter"].tolist() if not reporters.empty else []
who = st.selectbox("Reporter", options=[None, *names], format_func=lambda v: "All reporters" if v is None else str(v),
                   key="rep-who")
reports: pd.DataFrame = ui.fetch(reports=(q_reports.reports_page, f, who, 1000))["reports"]
st.caption(f"{len(reports):,} reports, newest first" + (" (first 1,000)" if len(reports) >= 1000 else "")
           + ". Select one to open it.")
rows = ui.table(
    reports, key=f"rep-list-{hash(who)}", name="reports", select=True, height=360,
    column_order=["begin_ts", "end_ts", "reporter", "domain", "report_id", "records", "messages", "policy", "format"],
    column_config={
        "begin_ts": ui.ts_col("Begins"), "end_ts": ui.ts_col("Ends"),
        "reporter": st.column_config.TextColumn("Reporter"), "domain": st.column_config.TextColumn("Domain"),
        "report_id": st.column_config.TextColumn("Report ID"), "records": ui.int_col("Rows"),
        "messages": ui.int_col("Messages"), "policy": st.column_config.TextColumn("p="),
        "format": st.column_config.TextColumn("Format"),
    },
)

key: str | None = None
if rows and rows[0] < len(reports):
    key = str(reports.iloc[rows[0]]["report_key"])
    st.query_params["report"] = key
elif "report" in st.query_params:
    key = str(st.query_params["report"])[:64]

if key:
    st.divider()
    detail = ui.fetch(meta=(q_reports.report_meta, key), records=(q_reports.report_detail_records, key))
    meta = detail["meta"]
    if not meta:
        st.warning("That report is not in this database.", icon=":material/search_off:")
        st.stop()
    head, close = st.columns([6, 1], vertical_alignment="bottom")
    head.subheader("Report " + ui.esc(meta["report_id"]) + " from " + ui.esc(meta["org_name"]))
    if not rows and close.button("Close", icon=":material/close:", key="rep-close"):
        del st.query_params["report"]
        st.rerun()
    recs: pd.DataFrame = detail["records"]
    m = st.columns(4)
    m[0].metric("Messages", ui.num(meta["message_count"]), border=True)
    passed = int(recs.loc[recs["dmarc_pass"], "count"].sum()) if not recs.empty else 0
    m[1].metric("DMARC pass rate", ui.pct(passed / meta["message_count"] if meta["message_count"] else None),
                border=True)
    m[2].metric("Rows", ui.num(meta["record_count"]), border=True)
    m[3].metric("Policy published", f"p={meta['p']}" if meta.get("p") else "–", border=True)
    left, right = st.columns([1, 2])
    with left:
        shown = ("org_name", "org_email", "org_extra_contact", "report_id", "domain", "begin_ts", "end_ts", "p",
                 "sp", "np", "pct", "adkim", "aspf", "fo", "testing", "discovery_method", "format", "generator",
                 "reporter_errors", "origin", "origin_member", "raw_sha256", "ingested_at")
        ui.kv_table({k: meta.get(k) for k in shown if k in meta}, key="rep-meta")
    with right:
        ui.table(recs, key=f"rep-records-{key}", name=f"report-{key}", height=420, column_config={
            "day": ui.date_col("Day"), "source_ip": st.column_config.TextColumn("Source IP"),
            "count": ui.int_col("Messages"), "dmarc_pass": st.column_config.CheckboxColumn("DMARC pass"),
        })
    if st.toggle("Show the raw XML", key=f"rep-raw-{key}"):
        xml = ui.fetch(xml=(q_reports.report_raw_xml, key))["xml"]
        if xml is None:
            st.info("The raw XML of this report was not kept.", icon=":material/info:")
        else:
            st.download_button("Download XML", data=xml.encode("utf-8"), file_name=f"report-{key}.xml",
                               mime="application/xml", icon=":material/download:", key="rep-xml-dl")
            if len(xml) > RAW_XML_SHOWN:
                st.caption(f"Showing the first {RAW_XML_SHOWN:,} of {len(xml):,} characters.")
            st.code(xml[:RAW_XML_SHOWN], language="xml", line_numbers=False)
