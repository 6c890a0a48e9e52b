"""The dashboard in a real browser: Debian Chromium driving the real Streamlit server.

What AppTest cannot see is checked here: charts actually drawn, no exception
boxes, no console errors, no request leaving the machine, hostile report
values shown as inert text, and an ingest of 1,000 reports running while the
page auto-refreshes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dashboards.launch import APP_OPTIONS
from dmarclens.generator import many_small_reports
from tests.servers.streamlit_app import exceptions, wait_for_app_idle, wait_for_plotly

from .conftest import APP, HOSTILE_IP, HOSTILE_ORG, REPO, ingest

# (sidebar link text, charts on the page)
NAV: list[tuple[str, int]] = [
    ("Overview", 4),
    ("Sources", 2),
    ("Anomalies", 0),
    ("Policy readiness", 1),
    ("Reports", 1),
    ("Ingest health", 0),
]
SCREENSHOT_DIR_ENV = "DMARCLENS_SCREENSHOTS"  # set to a folder (e.g. docs/screenshots) to keep the shots


def start(factory: Callable[..., Any], db: Path) -> Any:
    """The dashboard as `dmarclens dashboard` runs it (same Streamlit options), on ``db``."""
    return factory(APP, env={"DMARCLENS_DB": str(db), "DMARCLENS_CONFIG": "", "DMARCLENS_DOMAINS": "",
                             "DMARCLENS_DASHBOARD_PASSWORD_HASH": ""},
                   streamlit_options=APP_OPTIONS, cwd=db.parent)


def watch_network(page: Any, base: str) -> tuple[list[str], list[str]]:
    """Record requests leaving the server's origin, and failed responses."""
    outside: list[str] = []
    failed: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("data:", "blob:", base)) else None)
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return outside, failed


def test_every_page_draws_without_errors(sample_db_template: Path, page: Any,
                                         streamlit_server_factory: Callable[..., Any], tmp_path: Path) -> None:
    server = start(streamlit_server_factory, sample_db_template)
    outside, failed = watch_network(page, server.url)
    page.goto(f"{server.url}/?period=90+days&domain=example.com")
    shots = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    for label, charts in NAV:
        if label != "Overview":
            page.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
        wait_for_app_idle(page, timeout=60)
        if charts:
            wait_for_plotly(page, count=charts, timeout=60)
        assert exceptions(page) == [], label
        # the shared filters follow the user from page to page, in the URL
        assert "period=90+days" in page.url and "domain=example.com" in page.url, (label, page.url)
        page.screenshot(path=str(shots / f"{label.split()[0].lower()}.png"))
    assert page.console_errors == []  # type: ignore[attr-defined]
    assert page.page_errors == []  # type: ignore[attr-defined]
    assert failed == []
    assert outside == [], "the dashboard must not call out (telemetry, CDNs, fonts)"


def test_hostile_report_values_render_as_text(hostile_db_template: Path, page: Any,
                                              streamlit_server_factory: Callable[..., Any]) -> None:
    server = start(streamlit_server_factory, hostile_db_template)
    with duckdb.connect(str(hostile_db_template), read_only=True) as con:
        key = con.execute("SELECT report_key FROM reports WHERE org_name LIKE '%Evil Corp%'").fetchone()[0]
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    visits = [
        ("reports", f"report={key}&period=All+data"),
        ("sources", f"ip={HOSTILE_IP}&period=All+data"),
        ("", "period=All+data"),
        ("readiness", "period=All+data"),
        ("ingest", ""),
    ]
    for path, query in visits:
        page.goto(f"{server.url}/{path}?{query}")
        wait_for_app_idle(page, timeout=60)
        assert exceptions(page) == [], path
        if path == "reports":
            page.get_by_text("Show the raw XML").click()
            wait_for_app_idle(page, timeout=60)
            # the report heading names the org literally: the markup is text, not elements
            assert page.get_by_text(HOSTILE_ORG[:40], exact=False).count() >= 1
            assert page.locator('[data-testid="stCode"]').first.inner_text().count("window.__pwned") >= 4
        if path == "sources":
            assert page.get_by_text("Source 203.0.113.99").count() == 1
        assert page.evaluate("window.__pwned") is None, path
        assert page.locator('img[src="x"], svg[onload], [onerror], [onload]').count() == 0, path
        assert page.locator('a[href^="javascript:" i]').count() == 0, path
        assert page.locator("script", has_text="__pwned").count() == 0, path
    assert dialogs == []
    assert page.page_errors == []  # type: ignore[attr-defined]


def _first_metric(page: Any) -> str:
    return page.locator('[data-testid="stMetricValue"]').first.inner_text().strip()


def test_ingest_of_1000_reports_while_the_dashboard_refreshes(
    tmp_path: Path, page: Any, streamlit_server_factory: Callable[..., Any]
) -> None:
    from dashboards.ui import compact

    reports = list(many_small_reports(1000, seed=11))
    first, rest = tmp_path / "first", tmp_path / "rest"
    first.mkdir()
    rest.mkdir()
    for i, (name, data) in enumerate(reports):
        ((first if i < 50 else rest) / name).write_bytes(data)
    db = tmp_path / "live.duckdb"
    ingest(first, db)
    server = start(streamlit_server_factory, db)
    page.goto(f"{server.url}/?period=All+data&refresh=5+s")
    wait_for_app_idle(page, timeout=60)
    before = _first_metric(page)

    env = {k: v for k, v in os.environ.items() if not k.startswith("DMARCLENS_")}
    proc = subprocess.Popen([sys.executable, "-m", "dmarclens", "ingest", str(rest), "--db", str(db), "--json"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reloads = 0
    try:
        while proc.poll() is None:
            page.wait_for_timeout(700)
            assert exceptions(page) == []
            if reloads < 3:  # full renders while batches are being written, besides the auto-refresh
                page.reload()
                reloads += 1
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert '"stored": 950' in out.replace(" ", "").replace('"stored":950', '"stored": 950')

    with duckdb.connect(str(db), read_only=True) as con:
        total = con.execute("SELECT sum(count) FROM records").fetchone()[0]
    expected = compact(int(total))
    # no reload from here on: the auto-refresh must bring the new data by itself
    deadline = time.monotonic() + 60
    while _first_metric(page) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    assert _first_metric(page) == expected != before
    wait_for_app_idle(page, timeout=60)
    assert exceptions(page) == []
    assert page.page_errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("host, warns", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_dashboard_command_binds_loopback_and_warns_otherwise(host: str, warns: bool, sample_db_template: Path,
                                                              tmp_path: Path) -> None:
    """`dmarclens dashboard` really serves; a non-loopback bind without a password warns."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMARCLENS_")}
    log = tmp_path / "dash.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dmarclens", "dashboard", "--db", str(sample_db_template), "--host", host,
             "--port", str(port)], cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert ("warning: the dashboard will listen on 0.0.0.0" in text) is warns
        assert "gatherUsageStats" not in text
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=15)
