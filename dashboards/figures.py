"""Plotly figure builders: pure functions of DataFrames, no Streamlit, no SQL.

One colour language everywhere so a glance is enough: DMARC pass is green,
fail is red, quarantine amber, "no action" grey; baselines are dashed grey.
Every label that can come from a report (org names, service names derived
from reverse DNS, identifiers) goes through :func:`safe_label`, because
plotly interprets a few HTML tags (``<a href>``, ``<b>``) inside text.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboards.countries import iso3

PASS = "#2e7d32"
FAIL = "#c62828"
QUARANTINE = "#ef8f00"
NONE = "#9aa5b1"
ACCENT = "#1f4e79"
BASELINE = "#5f6b7a"
DOMAIN_COLOURS = ["#1f4e79", "#7b3294", "#008837", "#e66101", "#5e3c99", "#0571b0", "#a6611a", "#4d4d4d"]

MAX_LINES = 8

_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 10, "r": 10, "t": 48, "b": 10},
    "font": {"family": "Source Sans Pro, Helvetica, Arial, sans-serif", "size": 13, "color": "#262730"},
    "title": {"x": 0, "xanchor": "left", "font": {"size": 16}},
    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0, "title": None,
               "traceorder": "normal"},
    "hovermode": "x unified",
}


_BOTTOM_LEGEND: dict[str, Any] = {"orientation": "h", "yanchor": "top", "y": -0.12, "xanchor": "left", "x": 0,
                                  "title": None, "traceorder": "normal"}


def safe_label(value: Any, max_len: int = 80) -> str:
    """Text that plotly shows literally: tag brackets become entities, length is capped."""
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    if len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _safe_series(values: Iterable[Any]) -> list[str]:
    return [safe_label(v) for v in values]


def _layout(fig: go.Figure, title: str, height: int = 340, **extra: Any) -> go.Figure:
    fig.update_layout(**{**_LAYOUT, "title": {**_LAYOUT["title"], "text": title}, "height": height, **extra})
    return fig


def empty(title: str, message: str = "No data for these filters", height: int = 300) -> go.Figure:
    """A placeholder chart that says why it is empty instead of drawing blank axes."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"size": 14, "color": BASELINE},
                       xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height)


def pass_fail_per_day(daily: pd.DataFrame, title: str = "Messages per day") -> go.Figure:
    """Stacked bars: messages that passed DMARC (green) and failed (red) per day."""
    if daily.empty:
        return empty(title)
    d = daily.groupby("day", as_index=False)[["passed", "failed"]].sum()
    fig = go.Figure([
        go.Bar(x=d["day"], y=d["passed"], name="Passed DMARC", marker_color=PASS,
               hovertemplate="%{y:,} passed<extra></extra>"),
        go.Bar(x=d["day"], y=d["failed"], name="Failed DMARC", marker_color=FAIL,
               hovertemplate="%{y:,} failed<extra></extra>"),
    ])
    fig.update_layout(barmode="stack", bargap=0.15)
    fig.update_yaxes(title=None, tickformat=",")
    return _layout(fig, title)


def pass_rate_per_day(daily: pd.DataFrame, title: str = "DMARC pass rate per domain") -> go.Figure:
    """One line per domain: share of messages passing DMARC each day."""
    if daily.empty:
        return empty(title)
    totals = daily.groupby("domain")[["passed", "messages"]].sum()
    if len(totals) > MAX_LINES:  # fifty lines are noise: show the domains that need attention
        worst = (totals["passed"] / totals["messages"]).nsmallest(MAX_LINES).index
        daily = daily[daily["domain"].isin(worst)]
        title = f"{title} — the {MAX_LINES} lowest of {len(totals)}"
    fig = go.Figure()
    for i, (domain, g) in enumerate(daily.groupby("domain", sort=True)):
        rate = (g["passed"] / g["messages"].where(g["messages"] > 0)).fillna(0)
        fig.add_trace(go.Scatter(
            x=g["day"], y=rate, mode="lines", name=safe_label(domain),
            line={"color": DOMAIN_COLOURS[i % len(DOMAIN_COLOURS)], "width": 2},
            hovertemplate="%{y:.1%}<extra>" + safe_label(domain) + "</extra>",
        ))
    lo = float(min(0.9, (daily["passed"] / daily["messages"].where(daily["messages"] > 0)).min() or 0))
    fig.update_yaxes(tickformat=".0%", range=[max(0.0, lo - 0.05), 1.01], title=None)
    return _layout(fig, title)


def dispositions_per_day(daily: pd.DataFrame, title: str = "What receivers did") -> go.Figure:
    """Stacked areas: delivered (no action), quarantined, rejected."""
    if daily.empty:
        return empty(title)
    d = daily.groupby("day", as_index=False)[["disp_none", "disp_quarantine", "disp_reject"]].sum()
    fig = go.Figure()
    for col, name, colour in (
        ("disp_none", "Delivered (no action)", NONE),
        ("disp_quarantine", "Quarantined", QUARANTINE),
        ("disp_reject", "Rejected", FAIL),
    ):
        fig.add_trace(go.Scatter(x=d["day"], y=d[col], name=name, stackgroup="d", mode="lines",
                                 line={"width": 0.5, "color": colour}, fillcolor=colour,
                                 hovertemplate="%{y:,} " + name.lower() + "<extra></extra>"))
    fig.update_yaxes(tickformat=",", title=None)
    return _layout(fig, title)


def services_bar(services: pd.DataFrame, top: int = 12, title: str = "Top sending services") -> go.Figure:
    """Horizontal stacked bars of passing/failing mail for the largest services."""
    if services.empty:
        return empty(title)
    d = services.nlargest(top, "messages").iloc[::-1]
    labels = [safe_label(v, 32) for v in d["service"]]
    fig = go.Figure([
        go.Bar(y=labels, x=d["passed"], orientation="h", name="Passed DMARC", marker_color=PASS,
               hovertemplate="%{x:,} passed<extra></extra>"),
        go.Bar(y=labels, x=d["failed"], orientation="h", name="Failed DMARC", marker_color=FAIL,
               hovertemplate="%{x:,} failed<extra></extra>"),
    ])
    fig.update_xaxes(tickformat=",", title=None)
    return _layout(fig, title, height=max(300, 30 * len(d) + 110), barmode="stack", hovermode="y unified",
                   legend=_BOTTOM_LEGEND)


def country_map(countries: pd.DataFrame, title: str = "Where the mail comes from") -> go.Figure:
    """World map shaded by messages per source country; hover shows failures."""
    d = countries.copy()
    d["iso3"] = [iso3(c) for c in d["country"]]
    d = d[d["iso3"].notna()]
    if d.empty:
        return empty(title, "No country information for these sources", height=420)
    fail_share = (d["failed"] / d["messages"]).fillna(0)
    # Log colour scale: one big country would otherwise wash every other one out.
    z = np.log10(d["messages"].clip(lower=1).astype(float))
    top = int(np.ceil(z.max())) if len(z) else 1
    ticks = list(range(0, top + 1))
    fig = go.Figure(go.Choropleth(
        locations=d["iso3"], z=z, locationmode="ISO-3", zmin=0, zmax=max(1, top),
        colorscale=[[0, "#dbe6f1"], [1, ACCENT]], marker_line_color="#ffffff", marker_line_width=0.5,
        colorbar={"title": {"text": "Messages", "font": {"size": 12}}, "thickness": 10, "len": 0.7,
                  "tickvals": ticks, "ticktext": [f"{10 ** t:,}" for t in ticks]},
        customdata=list(zip(d["country"], d["failed"], fail_share, d["messages"], strict=True)),
        hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[3]:,} messages<br>%{customdata[1]:,} failed "
                      "(%{customdata[2]:.1%})<extra></extra>",
    ))
    fig.update_geos(showframe=False, showcoastlines=False, projection_type="natural earth",
                    showcountries=True, countrycolor="#c8d0d9", showland=True, landcolor="#f3f5f7",
                    lataxis_range=[-58, 85])
    return _layout(fig, title, height=420, hovermode="closest")


def history_bars(history: pd.DataFrame, title: str) -> go.Figure:
    """Pass/fail per day for one source (all selected domains summed)."""
    return pass_fail_per_day(history, title)


def identity_vs_baseline(
    series: pd.DataFrame,
    *,
    title: str,
    first_day: date | None = None,
    last_day: date | None = None,
    expected: float | None = None,
) -> go.Figure:
    """An anomaly's identity: daily messages (pass/fail) against its own baseline.

    The baseline drawn is the trailing 28-day median of the days before each
    day (what "normal" looked like then), frozen at the anomaly's first day;
    the detector's expected daily value, when above zero, is a dashed line;
    the anomaly window is shaded.
    """
    if series.empty:
        return empty(title, "No mail from this identity in the window")
    s = series.set_index(pd.to_datetime(series["day"])).sort_index()
    full = pd.date_range(s.index.min(), s.index.max(), freq="D")
    s = s.reindex(full, fill_value=0)
    baseline = s["messages"].shift(1).rolling(28, min_periods=5).median()
    if first_day is not None:  # freeze "normal" at the anomaly's start: the anomaly must not raise its own bar
        start = pd.Timestamp(first_day)
        frozen = baseline[baseline.index <= start]
        if not frozen.empty:
            baseline[baseline.index > start] = frozen.iloc[-1]
    fig = go.Figure([
        go.Bar(x=full, y=s["passed"], name="Passed DMARC", marker_color=PASS,
               hovertemplate="%{y:,} passed<extra></extra>"),
        go.Bar(x=full, y=s["failed"], name="Failed DMARC", marker_color=FAIL,
               hovertemplate="%{y:,} failed<extra></extra>"),
        go.Scatter(x=full, y=baseline, name="Baseline (28-day median)", mode="lines",
                   line={"color": BASELINE, "dash": "dot", "width": 2},
                   hovertemplate="baseline %{y:,.0f}<extra></extra>"),
    ])
    if expected:
        fig.add_hline(y=expected, line={"color": BASELINE, "dash": "dash", "width": 1},
                      annotation_text=f"expected ≈ {expected:,.0f}/day", annotation_position="top left")
    if first_day is not None and last_day is not None:
        fig.add_vrect(x0=pd.Timestamp(first_day) - pd.Timedelta(hours=12),
                      x1=pd.Timestamp(last_day) + pd.Timedelta(hours=12),
                      fillcolor=FAIL, opacity=0.08, line_width=0,
                      annotation_text="anomaly", annotation_position="top left")
    fig.update_layout(barmode="stack", bargap=0.15)
    fig.update_yaxes(tickformat=",", title=None)
    return _layout(fig, title, height=360)


def enforcement_bars(rows: pd.DataFrame, title: str) -> go.Figure:
    """Per legitimate source: mail that would still arrive vs be blocked under p=reject."""
    if rows.empty:
        return empty(title, "No legitimate sources in the last 30 days")
    d = rows.nlargest(12, "messages").iloc[::-1]
    labels = [safe_label(v, 32) for v in d["service"]]
    fig = go.Figure([
        go.Bar(y=labels, x=d["passed"], orientation="h", name="Delivered (passes DMARC)", marker_color=PASS,
               hovertemplate="%{x:,} delivered<extra></extra>"),
        go.Bar(y=labels, x=d["failed_overridden"], orientation="h", name="Fails, receivers override (forwarded)",
               marker_color=QUARANTINE, hovertemplate="%{x:,} fail but forwarded<extra></extra>"),
        go.Bar(y=labels, x=d["failed"] - d["failed_overridden"], orientation="h",
               name="Would be rejected", marker_color=FAIL,
               hovertemplate="%{x:,} would be rejected<extra></extra>"),
    ])
    fig.update_xaxes(tickformat=",", title=None)
    return _layout(fig, title, height=max(260, 34 * len(d) + 130), barmode="stack", hovermode="y unified",
                   legend=_BOTTOM_LEGEND)


def count_bar(df: pd.DataFrame, label_col: str, value_col: str, title: str, colour: str = ACCENT,
              top: int = 15) -> go.Figure:
    """A plain horizontal bar chart (reporters, traffic classes ...)."""
    if df.empty:
        return empty(title)
    d = df.nlargest(top, value_col).iloc[::-1]
    fig = go.Figure(go.Bar(y=_safe_series(d[label_col]), x=d[value_col], orientation="h", marker_color=colour,
                           hovertemplate="%{x:,}<extra></extra>"))
    fig.update_xaxes(tickformat=",", title=None)
    return _layout(fig, title, height=max(240, 30 * len(d) + 90), hovermode="y unified", showlegend=False)


CLASS_COLOURS = {
    "authorized": PASS, "forwarded": QUARANTINE, "misconfigured": "#8e24aa", "spoofed": FAIL, "unknown": NONE,
}


def traffic_class_bar(classes: pd.DataFrame, title: str = "Traffic classes") -> go.Figure:
    """Messages per traffic class, coloured by what the class means."""
    if classes.empty:
        return empty(title)
    d = classes.sort_values("messages")
    colours = [CLASS_COLOURS.get(str(c), ACCENT) for c in d["traffic_class"]]
    fig = go.Figure(go.Bar(y=_safe_series(d["traffic_class"]), x=d["messages"], orientation="h",
                           marker_color=colours, hovertemplate="%{x:,} messages<extra></extra>"))
    fig.update_xaxes(tickformat=",", title=None)
    return _layout(fig, title, height=max(220, 36 * len(d) + 90), hovermode="y unified", showlegend=False)


def aligned_rates_per_day(daily: pd.DataFrame, title: str = "Aligned DKIM and SPF") -> go.Figure:
    """Share of messages with aligned DKIM and with aligned SPF per day (all selected domains).

    The gap between the two lines is usually forwarding (SPF breaks, DKIM
    survives); a drop in the DKIM line is a broken key or signer.
    """
    if daily.empty:
        return empty(title)
    d = daily.groupby("day", as_index=False)[["messages", "dkim_aligned", "spf_aligned", "passed"]].sum()
    total = d["messages"].where(d["messages"] > 0)
    fig = go.Figure()
    for col, name, colour, dash in (
        ("passed", "DMARC pass", PASS, "solid"),
        ("dkim_aligned", "DKIM aligned", ACCENT, "solid"),
        ("spf_aligned", "SPF aligned", "#7b3294", "dot"),
    ):
        fig.add_trace(go.Scatter(x=d["day"], y=(d[col] / total).fillna(0), mode="lines", name=name,
                                 line={"color": colour, "width": 2, "dash": dash},
                                 hovertemplate="%{y:.1%} " + name + "<extra></extra>"))
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02], title=None)
    return _layout(fig, title)
