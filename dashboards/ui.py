"""Shared dashboard plumbing: the database handle, filters in the URL, safe text, tables.

Three rules live here so pages cannot get them wrong:

* **Never hold DuckDB.** :func:`fetch` opens the file read-only, runs the page's
  queries, and closes it before anything is drawn (docs/design.md §3: a cron ingest
  must never wait on an open dashboard). Results are cached by the file's
  modification stamp, so a rerun after an ingest sees the new data and a rerun
  without one costs nothing.
* **Report data is attacker-controlled.** Anyone can mail a "report" to a rua
  address, so org names, IPs and comments are rendered as text: through
  ``st.dataframe``/``st.code``/``st.text``, or :func:`esc` before any markdown.
  CSV downloads neutralise spreadsheet formulas (:func:`csv_safe`).
* **A view is a URL.** Domain and period filters are widgets bound to the
  query string (``bind="query-params"``), so a copied URL reopens the same view.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from types import FunctionType
from typing import Any

import pandas as pd
import streamlit as st

from dmarclens.core.errors import ConfigError, LockedError, StoreError
from dmarclens.query import anomalies as q_anomalies
from dmarclens.query import traffic as q_traffic
from dmarclens.query.api import connect
from dmarclens.query.filters import Filters

ENV_DB = "DMARCLENS_DB"
LOCK_TIMEOUT = 20.0
# Bound widgets write their option *labels* to the URL, so labels double as URL values.
PERIODS: dict[str, int | None] = {
    "7 days": 7, "30 days": 30, "90 days": 90, "12 months": 365, "All data": None, "Custom": None,
}
DEFAULT_PERIOD = "30 days"
REFRESH: dict[str, int] = {"Off": 0, "5 s": 5, "10 s": 10, "30 s": 30, "1 min": 60, "5 min": 300}


# --------------------------------------------------------------------------- database

def db_path() -> Path:
    """The database the dashboard reads: $DMARCLENS_DB (set by `dmarclens dashboard`), else config."""
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env)
    from dmarclens.core.config import load_settings

    return load_settings().db


def db_stamp(path: Path) -> tuple[int, int, int, int]:
    """Changes whenever a writer commits (main file or its WAL), without opening the file."""
    out: list[int] = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            s = p.stat()
            out += [s.st_mtime_ns, s.st_size]
        except FileNotFoundError:
            out += [0, 0]
    return (out[0], out[1], out[2], out[3])


Call = tuple[Any, ...]
"""(query function, *args): a call into the query layer (``dmarclens.query``); the connection is added first."""


def _query_key(fn: Callable[..., Any]) -> str:
    """A query function in the cache key: its module and name (Streamlit cannot hash functions)."""
    return f"{fn.__module__}.{fn.__qualname__}"


@st.cache_data(ttl=900, max_entries=256, show_spinner=False, hash_funcs={FunctionType: _query_key})
def _run_calls(path: str, stamp: tuple[int, int, int, int], calls: tuple[tuple[str, Call], ...]) -> dict[str, Any]:
    """Run query-layer calls on one short-lived read-only connection.

    Cached on (path, stamp, calls): the function reads only its arguments, and
    the stamp changes with every commit, so cached answers are never stale.
    """
    del stamp  # part of the cache key only
    out: dict[str, Any] = {}
    con = connect(Path(path), read_only=True, lock_timeout=LOCK_TIMEOUT, warn_outdated=False)
    try:
        for name, (fn, *args) in calls:
            out[name] = fn(con, *args)
    finally:
        con.close()
    return out


def fetch(**calls: Call) -> dict[str, Any]:
    """Run the page's queries (``name=(query_fn, *args)``) and return their results by name.

    A missing database or a lock that outlasts the retries ends the page with
    a plain explanation instead of a traceback.
    """
    path = db_path()
    try:
        return _run_calls(str(path), db_stamp(path), tuple(sorted(calls.items())))
    except LockedError:
        st.warning("The database is busy: an ingest has held it for longer than "
                   f"{LOCK_TIMEOUT:.0f} s. This page will load on the next refresh.", icon=":material/hourglass:")
        st.stop()
    except StoreError as e:
        st.error(f"Cannot open the database. {e}", icon=":material/error:")
        st.stop()
    raise AssertionError("unreachable")


def acknowledge(anomaly_id: str, note: str | None) -> bool:
    """The dashboard's only write: one acknowledgement, one short transaction, connection closed.

    Opened without migrating (nothing else to do) and with a short lock wait,
    so a scheduled ingest is delayed by at most this one transaction.
    """
    by = "dashboard"
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if user:
        by = f"dashboard ({user})"
    con = connect(db_path(), read_only=False, lock_timeout=LOCK_TIMEOUT, migrate=False)
    try:
        q_anomalies.acknowledge(con, anomaly_id, note=note or None, by=by)
    except ConfigError:
        return False  # no such anomaly (any more)
    finally:
        con.close()
    return True


# --------------------------------------------------------------------------- filters

@dataclass(frozen=True)
class View:
    """What the sidebar decided for this run: the query filters plus context for captions."""

    filters: Filters
    all_domains: tuple[str, ...]
    first_day: date | None
    last_day: date | None
    period: str

    @property
    def has_data(self) -> bool:
        return self.last_day is not None

    def caption(self) -> str:
        """"3 domains · 2026-10-01 → 2026-10-30" for page subtitles (plain text)."""
        f = self.filters
        doms = ", ".join(f.domains) if f.domains else f"all {len(self.all_domains)} domains"
        if len(f.domains) > 3:
            doms = f"{len(f.domains)} domains"
        span = f"{f.start} → {f.end}" if f.start and f.end else "no data yet"
        return f"{doms} · {span}"

    def previous(self) -> Filters | None:
        """The same-length window just before this one (for "vs previous period" deltas)."""
        f = self.filters
        if not (f.start and f.end) or self.first_day is None or f.start <= self.first_day:
            return None
        length = (f.end - f.start).days + 1
        return Filters(domains=f.domains, start=f.start - timedelta(days=length), end=f.start - timedelta(days=1))


def _period_bounds(period: str, first: date, last: date, custom: Any) -> tuple[date, date]:
    if period == "Custom" and isinstance(custom, (tuple, list)) and len(custom) == 2:
        return custom[0], custom[1]
    if period == "Custom" and isinstance(custom, (tuple, list)) and len(custom) == 1:
        return custom[0], custom[0]
    days = PERIODS.get(period)
    if days is None:
        return first, last
    return max(first, last - timedelta(days=days - 1)), last


def sidebar_filters(configured_domains: Sequence[str] = ()) -> View:
    """Domain and period filters in the sidebar, bound to the URL; returns this run's view."""
    meta = fetch(domains=(q_traffic.domains,), bounds=(q_traffic.data_bounds,))
    all_domains: tuple[str, ...] = tuple(meta["domains"])
    first, last = meta["bounds"]
    default_domains = [d for d in configured_domains if d in all_domains]
    with st.sidebar:
        st.markdown("**Filters**")
        chosen = st.multiselect(
            "Domains", options=list(all_domains), default=default_domains, key="domain",
            bind="query-params", placeholder="All domains",
            help="Policy domains to show. Empty means every domain in the database.",
        )
        period = st.selectbox("Period", options=list(PERIODS), index=list(PERIODS).index(DEFAULT_PERIOD),
                              key="period", bind="query-params",
                              help="Windows end at the newest day with data (reports arrive a day late).")
        start = end = None
        if first is not None and last is not None:
            custom = None
            if period == "Custom":
                custom = st.date_input("Dates", value=(max(first, last - timedelta(days=29)), last),
                                       min_value=first, max_value=last, key="dates", bind="query-params")
            start, end = _period_bounds(period or DEFAULT_PERIOD, first, last, custom)
    view = View(
        filters=Filters(domains=tuple(chosen or ()), start=start, end=end),
        all_domains=all_domains, first_day=first, last_day=last, period=period or DEFAULT_PERIOD,
    )
    return view


def auto_refresh_control() -> None:
    """Sidebar "auto-refresh" choice; reruns the app when the database changed.

    The check is a stat() of the file every N seconds (no connection), and the
    app reruns only when an ingest committed something, so an open dashboard
    costs the database nothing between refreshes.
    """
    with st.sidebar:
        choice = st.selectbox("Auto-refresh", options=list(REFRESH), index=0, key="refresh", bind="query-params",
                              help="Reload when new reports are ingested, checking at this interval.")
    seconds = REFRESH.get(choice or "Off", 0)
    if not seconds:
        return
    path = db_path()
    seen = db_stamp(path)

    @st.fragment(run_every=seconds)
    def _watch() -> None:
        if db_stamp(path) != seen:
            st.rerun(scope="app")

    _watch()


def current_view() -> View:
    """The view app.py computed for this run (pages call this instead of re-reading widgets)."""
    view = st.session_state.get("_view")
    if not isinstance(view, View):
        raise RuntimeError(f"dashboards/app.py must run sidebar_filters() before a page {type(view)} {View} {id(View)} {id(type(view))}")
    return view


# --------------------------------------------------------------------------- safe text

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=&\"'@^])")


def esc(value: Any, max_len: int = 300) -> str:
    """Text that st.markdown shows literally (no links, HTML, emphasis, emoji, LaTeX).

    Every ASCII punctuation character is backslash-escaped (CommonMark allows
    it for all of them); newlines collapse to spaces so a value cannot start a
    heading or a list; overly long values are cut.
    """
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    if len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", text)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Neutralise spreadsheet formulas in text cells (a report value like ``=HYPERLINK(..)``).

    A leading apostrophe makes Excel/LibreOffice show the text instead of
    evaluating it; numbers (negative ones included) are left alone.
    """
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v
            )
    return out


def csv_button(df: pd.DataFrame, name: str, key: str) -> None:
    """A "Download CSV" button for exactly the rows in the table above it."""
    data = csv_safe(df).to_csv(index=False).encode("utf-8")
    st.download_button("Download CSV", data=data, file_name=f"dmarclens-{name}.csv", mime="text/csv",
                       key=f"csv-{key}", icon=":material/download:", type="tertiary")


def table(
    df: pd.DataFrame,
    *,
    key: str,
    name: str,
    column_config: dict[str, Any] | None = None,
    select: bool = False,
    height: int | str = "auto",
    column_order: Sequence[str] | None = None,
) -> list[int]:
    """A read-only table with a CSV download; returns the selected row positions when ``select``."""
    if isinstance(height, int):  # never draw a tall empty grid under three rows
        height = min(height, 38 + 35 * max(1, len(df)))
    kwargs: dict[str, Any] = {
        "hide_index": True, "column_config": column_config or {}, "height": height, "key": key,
    }
    if column_order is not None:
        kwargs["column_order"] = list(column_order)
    if select:
        kwargs.update(on_select="rerun", selection_mode="single-row")
    state = st.dataframe(df, **kwargs)
    csv_button(df if column_order is None else df[[c for c in column_order if c in df.columns]], name, key)
    if select and state is not None:
        try:
            return list(state.selection.rows)
        except AttributeError:
            return []
    return []


def kv_table(items: dict[str, Any], *, key: str) -> None:
    """Field/value pairs (report metadata, IP facts) as a two-column table: safe for any value."""
    df = pd.DataFrame({"Field": list(items), "Value": ["" if v is None else str(v) for v in items.values()]})
    st.dataframe(df, hide_index=True, key=key, column_config={"Field": st.column_config.TextColumn(width="small")})


def plotly_config() -> dict[str, Any]:
    """Chart config: the world map comes from the app's own static folder, never a CDN."""
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return {"topojsonURL": ("/" + base if base else "") + "/app/static/", "displaylogo": False}


# --------------------------------------------------------------------------- formatting

def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or pd.isna(value) else f"{value * 100:.{digits}f}%"


def num(value: float | int | None) -> str:
    return "–" if value is None or pd.isna(value) else f"{int(value):,}"


def compact(value: float | int | None) -> str:
    """Short numbers for KPI cards (130.5k, 2.31M) so seven cards fit one row."""
    if value is None or pd.isna(value):
        return "–"
    v = float(value)
    if abs(v) >= 1_000_000:
        return f"{v / 1_000_000:.2f}M"
    if abs(v) >= 10_000:
        return f"{v / 1_000:.1f}k"
    return f"{int(v):,}"


def delta_pct_points(now: float | None, before: float | None) -> str | None:
    if now is None or before is None:
        return None
    return f"{(now - before) * 100:+.1f} pts"


def delta_count(now: int | None, before: int | None) -> str | None:
    if now is None or not before:
        return None
    change = (now - before) / before * 100
    return f"{change:+.1f}%" if abs(change) < 10 else f"{change:+.0f}%"


RATE = st.column_config.ProgressColumn("Pass rate", format="percent", min_value=0.0, max_value=1.0, width="small")


def rate_col(label: str, help: str | None = None) -> Any:
    return st.column_config.ProgressColumn(label, format="percent", min_value=0.0, max_value=1.0, width="small",
                                           help=help)


def int_col(label: str, help: str | None = None) -> Any:
    return st.column_config.NumberColumn(label, format="localized", help=help)


def date_col(label: str) -> Any:
    return st.column_config.DateColumn(label, format="YYYY-MM-DD")


def ts_col(label: str) -> Any:
    return st.column_config.DatetimeColumn(label, format="YYYY-MM-DD HH:mm", timezone="UTC")


_CSS = """<style>
.block-container { padding-top: 2.2rem; }
[data-testid="stMetricValue"] { font-size: 1.9rem; }
</style>"""


def header(title: str, view: View | None, explainer: str) -> None:
    """Page title, then one caption: the filter context (escaped) and what the page answers."""
    st.html(_CSS)  # constant styling only; never report data
    st.title(title)
    context = esc(view.caption(), 500) + " — " if view is not None and view.has_data else ""
    st.caption(context + explainer)


def no_data_yet() -> None:
    """The empty state of a fresh install: what to run to see something."""
    st.info(
        "No reports in this database yet. Load some with `dmarclens ingest PATH` "
        "(files, folders, .eml, mbox, Maildir) or `dmarclens fetch` (IMAP), or try `dmarclens demo`.",
        icon=":material/inbox:",
    )


def select_one(options: list[str], *, label: str, key: str, fmt: Callable[[str], str] | None = None) -> str | None:
    """A selectbox that returns None when there is nothing to choose from."""
    if not options:
        return None
    return st.selectbox(label, options, key=key, format_func=fmt or str)
