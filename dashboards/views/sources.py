"""Sources: who sends as the domains — services → IP ranges → IPs — and one source's history."""

from __future__ import annotations

import ipaddress
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import figures, ui
from dmarclens.query import traffic as q_traffic

view = ui.current_view()
ui.header("Sources", view, "Who sends mail as your domains: services, their IP ranges and single IPs. "
          "Select a row to drill down.")
if not view.has_data:
    ui.no_data_yet()
    st.stop()
f = view.filters

# What is selected upstream decides what the lower tables list; read it before drawing them.
base = ui.fetch(all=(q_traffic.sources_overview, f, None, None, 200), classes=(q_traffic.traffic_classes, f),
                totals=(q_traffic.totals, f), lookalikes=(q_traffic.lookalikes, f))
services: pd.DataFrame = base["all"]["services"]
countries: pd.DataFrame = base["all"]["countries"]
data = {"new": base["all"]["new"], "totals": base["totals"], "classes": base["classes"]}

c = st.columns(5)
c[0].metric("Services / networks", ui.num(len(services)), border=True,
            help="Known sending services, or the network (AS) owner when the service is not known")
c[1].metric("Sending IPs", ui.num(data["totals"]["sources"]), border=True)
c[2].metric("Countries", ui.num(countries["country"].notna().sum()), border=True)
c[3].metric("New IPs in period", ui.num(data["new"]["ips"]), border=True,
            help="IPs that sent mail for these domains in this period and none in the 90 days before it")
c[4].metric("Mail from new IPs", ui.num(data["new"]["messages"]), border=True,
            help="Messages sent in this period by those new IPs")

left, right = st.columns(2)
left.plotly_chart(figures.services_bar(services), key="src-services-bar")
right.plotly_chart(figures.country_map(countries), key="src-map", config=ui.plotly_config())
classes = data["classes"]
if classes is not None and set(classes["traffic_class"]) - {"unclassified"}:  # shown once enrich has run
    st.plotly_chart(figures.traffic_class_bar(classes), key="src-classes")

search = st.text_input("Find an IP", key="src-search", placeholder="e.g. 40.107.22.10 or 2a01:111::1",
                       help="Jump straight to one source's history").strip()

# --- services → ranges → IPs ------------------------------------------------------------
st.subheader("Services")
st.caption("Select a service to list its IP ranges.")
svc_rows = ui.table(
    services, key="src-services", name="services", select=True, height=300,
    column_order=["service", "service_type", "messages", "pass_rate", "passed", "failed", "ranges", "ips",
                  "countries", "first_day", "last_day"],
    column_config={
        "service": st.column_config.TextColumn("Service / network"),
        "service_type": st.column_config.TextColumn("Type"),
        "messages": ui.int_col("Messages"), "pass_rate": ui.rate_col("DMARC pass"),
        "passed": ui.int_col("Passed"), "failed": ui.int_col("Failed"),
        "ranges": ui.int_col("Ranges"), "ips": ui.int_col("IPs"),
        "countries": st.column_config.TextColumn("Countries"),
        "first_day": ui.date_col("First in period"), "last_day": ui.date_col("Last in period"),
    },
)
service: str | None = services.iloc[svc_rows[0]]["service"] if svc_rows and svc_rows[0] < len(services) else None

ranges: pd.DataFrame = (
    base["all"]["ranges"] if service is None else ui.fetch(s=(q_traffic.sources_overview, f, service, None, 200))["s"]["ranges"]
)
st.subheader("IP ranges" + (f" of {ui.esc(service)}" if service else ""))
st.caption("IPv4 /24 and IPv6 /48 networks. Select one to list its IPs.")
rng_rows = ui.table(
    ranges, key=f"src-ranges-{hash(service)}", name="ip-ranges", select=True, height=300,
    column_order=["ip_range", "service", "messages", "pass_rate", "passed", "failed", "ips", "countries",
                  "first_day", "last_day"],
    column_config={
        "ip_range": st.column_config.TextColumn("Range"), "service": st.column_config.TextColumn("Service"),
        "messages": ui.int_col("Messages"), "pass_rate": ui.rate_col("DMARC pass"),
        "passed": ui.int_col("Passed"), "failed": ui.int_col("Failed"), "ips": ui.int_col("IPs"),
        "countries": st.column_config.TextColumn("Countries"),
        "first_day": ui.date_col("First in period"), "last_day": ui.date_col("Last in period"),
    },
)
ip_range: str | None = ranges.iloc[rng_rows[0]]["ip_range"] if rng_rows and rng_rows[0] < len(ranges) else None

ips: pd.DataFrame = (
    base["all"]["ips"] if service is None and ip_range is None
    else ui.fetch(s=(q_traffic.sources_overview, f, service, ip_range, 200))["s"]["ips"]
)
scope = ip_range or service
st.subheader("IPs" + (f" in {ui.esc(scope)}" if scope else "") + " — top 200 by volume")
st.caption("First/last seen are over all time for the selected domains. Select an IP for its history.")
ip_cols: dict[str, Any] = {
    "source_ip": st.column_config.TextColumn("IP"), "service": st.column_config.TextColumn("Service"),
    "reverse_dns": st.column_config.TextColumn("Reverse DNS"), "country": st.column_config.TextColumn("Country"),
    "as_name": st.column_config.TextColumn("Network (AS)"), "messages": ui.int_col("Messages"),
    "pass_rate": ui.rate_col("DMARC pass"), "failed": ui.int_col("Failed"), "blocked": ui.int_col("Quarantined/rejected"),
    "first_seen": ui.date_col("First seen"), "last_seen": ui.date_col("Last seen"),
    "domains": st.column_config.TextColumn("Domains"),
}
classified = classes is not None and bool(set(classes["traffic_class"]) - {"unclassified"})
if classified and not ips.empty:
    per_ip = ui.fetch(c=(q_traffic.ip_traffic_classes, f, ips["source_ip"].tolist()))["c"]
    if per_ip is not None:
        ips = ips.merge(per_ip, on="source_ip", how="left")
        ip_cols = {**ip_cols, "traffic_class": st.column_config.TextColumn("Traffic class")}
ip_rows = ui.table(
    ips, key=f"src-ips-{hash((service, ip_range))}", name="ips", select=True, height=360,
    column_order=list(ip_cols), column_config=ip_cols,
)

lookalikes = base["lookalikes"]
if lookalikes is not None and not lookalikes.empty:
    st.subheader("Lookalike identifiers")
    st.caption("Envelope-from and DKIM domains in the reports that imitate your domains.")
    ui.table(lookalikes, key="src-lookalikes", name="lookalikes", height=260, column_config={
        "messages": ui.int_col("Messages"), "first_seen": ui.date_col("First seen"),
        "last_seen": ui.date_col("Last seen"),
    })

# --- one source ----------------------------------------------------------------------------
selected_ip: str | None = None
if search:
    try:
        selected_ip = str(ipaddress.ip_address(search))
    except ValueError:
        st.warning("That is not an IP address.", icon=":material/warning:")
elif ip_rows and ip_rows[0] < len(ips):
    selected_ip = str(ips.iloc[ip_rows[0]]["source_ip"])
if selected_ip:
    st.query_params["ip"] = selected_ip
elif "ip" in st.query_params:
    try:
        selected_ip = str(ipaddress.ip_address(st.query_params["ip"]))
    except ValueError:
        del st.query_params["ip"]

if selected_ip:
    st.divider()
    detail = ui.fetch(
        info=(q_traffic.source_info, selected_ip), history=(q_traffic.source_history, f, selected_ip),
        reports=(q_traffic.source_reports, f, selected_ip), idents=(q_traffic.source_identifiers, f, selected_ip),
    )
    head, close = st.columns([6, 1], vertical_alignment="bottom")
    head.subheader("Source " + ui.esc(selected_ip))
    if not ip_rows and not search and close.button("Close", icon=":material/close:", key="src-close"):
        del st.query_params["ip"]
        st.rerun()
    hist: pd.DataFrame = detail["history"]
    info: dict[str, Any] = detail["info"]
    if hist.empty:
        st.info("This IP sent no reported mail for the selected domains in this period.", icon=":material/info:")
    else:
        m = st.columns(4)
        total = int(hist["messages"].sum())
        m[0].metric("Messages", ui.num(total), border=True)
        m[1].metric("DMARC pass rate", ui.pct(hist["passed"].sum() / total if total else None), border=True)
        m[2].metric("First day in period", str(hist["day"].min().date()), border=True)
        m[3].metric("Last day in period", str(hist["day"].max().date()), border=True)
    left, right = st.columns([3, 2])
    left.plotly_chart(figures.history_bars(hist, "Daily messages from this IP"), key="src-hist")
    with right:
        facts: dict[str, Any] = {k: info.get(k) for k in ("service_name", "service_type", "reverse_dns", "base_domain", "fcrdns",
                                          "country", "asn", "as_name", "as_domain", "rdns_status") if k in info}
        extra = {k: v for k, v in info.items() if k not in facts and k not in ("ip", "offline_resolved_at",
                                                                               "rdns_resolved_at", "service_source")}
        ui.kv_table({**facts, **extra} if info else {"note": "no enrichment facts stored for this IP"},
                    key="src-facts")
    st.markdown("**What it sent as**")
    ui.table(detail["idents"], key="src-idents", name=f"identifiers-{selected_ip}", column_config={
        "header_from": st.column_config.TextColumn("Header From"),
        "envelope_from": st.column_config.TextColumn("Envelope From"),
        "dkim": st.column_config.TextColumn("DKIM (domain / selector: result)"),
        "spf": st.column_config.TextColumn("SPF (domain: result)"),
        "messages": ui.int_col("Messages"), "passed": ui.int_col("Passed DMARC"),
    })
    st.markdown("**Reports that mention it**")
    reps: pd.DataFrame = detail["reports"]
    rep_rows = ui.table(
        reps, key=f"src-reports-{selected_ip}", name=f"reports-{selected_ip}", select=True,
        column_order=["day", "reporter", "domain", "report_id", "messages", "passed", "dispositions",
                      "header_from", "envelope_from"],
        column_config={
            "day": ui.date_col("Day"), "reporter": st.column_config.TextColumn("Reporter"),
            "domain": st.column_config.TextColumn("Domain"), "report_id": st.column_config.TextColumn("Report ID"),
            "messages": ui.int_col("Messages"), "passed": ui.int_col("Passed"),
            "dispositions": st.column_config.TextColumn("Disposition"),
        },
    )
    if rep_rows and rep_rows[0] < len(reps):
        key = str(reps.iloc[rep_rows[0]]["report_key"])
        st.page_link("views/reports.py", label="Open this report", icon=":material/description:",
                     query_params={"report": key})
