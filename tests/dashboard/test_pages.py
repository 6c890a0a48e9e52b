"""Every dashboard page through Streamlit's AppTest, on databases whose numbers are known.

Each test checks what a domain owner would read: the KPI values, the rows of
the tables, the verdicts; not only that the page did not crash.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dmarclens.store import db as dbmod

from .conftest import (
    BETA_SPOOF_IP,
    DAYS,
    FORWARDER_IP,
    KNOWN,
    MS_IP,
    SENDGRID_IP,
    SPOOF_IP,
    ingest,
    known_specs,
    write_reports,
)

PAGES = ["overview", "sources", "anomalies", "readiness", "reports", "ingest"]


def metrics(at: Any) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frames(at: Any) -> list[Any]:
    return [d.value for d in at.dataframe]


def frame_with(at: Any, column: str) -> Any:
    for df in frames(at):
        if column in df.columns:
            return df
    raise AssertionError(f"no table with column {column!r}; tables: {[list(d.columns) for d in frames(at)]}")


def no_exception(at: Any) -> None:
    assert not at.exception, [e.message for e in at.exception]


def test_overview_shows_known_totals(known_db: Path, run_page: Callable[..., Any]) -> None:
    at = run_page(known_db, period="All data")
    no_exception(at)
    m = metrics(at)
    assert m["Messages"] == f"{KNOWN.messages:,}"
    assert m["DMARC pass"] == f"{KNOWN.passed / KNOWN.messages * 100:.1f}%"
    assert m["Failing DMARC"] == f"{KNOWN.messages - KNOWN.passed:,}"
    doms = frame_with(at, "policy").set_index("domain")
    assert doms.loc["alpha.example", "messages"] == KNOWN.alpha_messages
    assert doms.loc["beta.example", "messages"] == KNOWN.beta_messages
    assert doms.loc["alpha.example", "policy"] == "p=none"
    assert doms.loc["beta.example", "policy"] == "p=reject"
    assert doms.loc["beta.example", "rejected"] == 3 * DAYS
    charts = at.get("plotly_chart")
    assert len(charts) == 4
    assert '"Passed DMARC"' in charts[0].proto.spec and '"Failed DMARC"' in charts[0].proto.spec


def test_domain_filter_from_the_url(known_db: Path, run_page: Callable[..., Any]) -> None:
    at = run_page(known_db, period="All data", domain="beta.example")
    no_exception(at)
    assert metrics(at)["Messages"] == f"{KNOWN.beta_messages:,}"
    assert list(frame_with(at, "policy")["domain"]) == ["beta.example"]


def test_sources_hierarchy_and_drilldown(known_db: Path, run_page: Callable[..., Any]) -> None:
    at = run_page(known_db, "sources", period="All data", ip=SENDGRID_IP)
    no_exception(at)
    assert metrics(at)["Sending IPs"] == "6"
    ips = frame_with(at, "source_ip").set_index("source_ip")
    assert set(ips.index) == {MS_IP, "40.107.22.11", SENDGRID_IP, SPOOF_IP, FORWARDER_IP, BETA_SPOOF_IP}
    assert ips.loc[SENDGRID_IP, "messages"] == 20 * DAYS and ips.loc[SENDGRID_IP, "failed"] == 5 * DAYS
    assert str(ips.loc[SPOOF_IP, "first_seen"].date()) == "2026-10-01"
    ranges = frame_with(at, "ip_range")
    assert "40.107.22.0/24" in set(ranges["ip_range"])
    services = frame_with(at, "ranges")
    assert services["messages"].sum() == KNOWN.messages
    # the ?ip= drill-down: one source's identifiers and the reports that mention it
    assert any("149\\.72\\.160\\.17" in h.value for h in at.subheader)
    idents = frame_with(at, "dkim")
    assert set(idents["envelope_from"]) == {"alpha.example", "em.sendgrid.net"}
    reports = frame_with(at, "dispositions")
    assert len(reports) == DAYS and set(reports["reporter"]) == {"google.com"}
    assert len(at.get("plotly_chart")) == 3  # services, map, the IP's history


def test_readiness_verdicts(known_db: Path, run_page: Callable[..., Any]) -> None:
    at = run_page(known_db, "readiness")
    no_exception(at)
    overview = frame_with(at, "verdict").set_index("domain")
    # SendGrid loses 5 of its 20 daily messages: alpha cannot enforce yet.
    assert overview.loc["alpha.example", "verdict"] == "Not ready to enforce"
    assert overview.loc["beta.example", "verdict"] == "Enforcing (p=reject)"
    reasons = " ".join(m.value for m in at.markdown)
    assert f"Twilio SendGrid fails DMARC for {5 * DAYS} of {20 * DAYS} messages" in reasons.replace("\\", "")
    legit = [df for df in frames(at) if "at_risk_share" in df.columns]
    alpha_legit = legit[0].set_index("service")
    assert alpha_legit.loc["Twilio SendGrid", "reject"] == 5 * DAYS


def test_reports_page_opens_a_report_and_its_xml(known_db: Path, run_page: Callable[..., Any]) -> None:
    with duckdb.connect(str(known_db), read_only=True) as con:
        key = con.execute("SELECT report_key FROM reports WHERE report_id = 'g-alpha-3'").fetchone()[0]
    at = run_page(known_db, "reports", period="All data", report=key)
    no_exception(at)
    reporters = frame_with(at, "formats").set_index("reporter")
    assert reporters.loc["google.com", "reports"] == 2 * DAYS
    assert reporters.loc["Mail Receiver Inc", "reports"] == DAYS
    records = frame_with(at, "overrides")
    assert records["count"].sum() == 100 + 15 + 5 + 7 + 4
    assert set(records["source_ip"]) == {MS_IP, SENDGRID_IP, SPOOF_IP, FORWARDER_IP}
    toggle = next(t for t in at.toggle if t.label == "Show the raw XML")
    at = toggle.set_value(True).run()
    no_exception(at)
    xml = at.code[0].value
    assert "<report_id>g-alpha-3</report_id>" in xml


def test_ingest_health_counts_the_rejected_file(known_db: Path, run_page: Callable[..., Any]) -> None:
    at = run_page(known_db, "ingest")
    no_exception(at)
    m = metrics(at)
    assert m["Stored (30 days)"] == str(KNOWN.reports)
    assert m["Rejected (30 days)"] == "1"
    runs = frame_with(at, "items_seen")
    assert runs.iloc[0]["stored"] == KNOWN.reports and runs.iloc[0]["rejected"] == 1
    reasons = frame_with(at, "reason")
    assert len(reasons) >= 1 and reasons.iloc[0]["items"] == 1


def _insert_anomaly(db: Path) -> str:
    """A finding shaped like `dmarclens detect` stores it (migration 0003's table)."""
    con = dbmod.connect(db)
    try:
        keys = [r[0] for r in con.execute(
            "SELECT report_key FROM reports WHERE report_id IN ('g-alpha-13', 'g-alpha-14')").fetchall()]
        con.execute(
            """INSERT INTO anomalies (anomaly_id, kind, severity, severity_rank, score, domain, identity_key, identity,
                   first_day, last_day, messages, expected, passed, failed, dmarc, explanation, ips, report_keys,
                   report_ids, reporters, details, repeat_rule, first_detected_at, last_detected_at)
               VALUES ('an-1', 'volume_spike', 'high', 3, 9.5, 'alpha.example', 'service=Twilio SendGrid',
                   '{"service": "Twilio SendGrid"}', DATE '2026-10-14', DATE '2026-10-15', 40, 8.0, 30, 10, 'mixed',
                   'Twilio SendGrid sent 40 messages as alpha.example on 2026-10-14..15, 5x its usual 8.',
                   ['149.72.160.17'], ?, ['g-alpha-13', 'g-alpha-14'], ['google.com'], '{"ratio": 5.0}',
                   'severity', now(), now())""",
            [keys],
        )
    finally:
        con.close()
    return "an-1"


def test_anomalies_list_detail_and_acknowledge(known_db: Path, run_page: Callable[..., Any]) -> None:
    _insert_anomaly(known_db)
    at = run_page(known_db, "anomalies", period="All data")
    no_exception(at)
    assert metrics(at)["Open"] == "1"
    listed = frame_with(at, "explanation")
    assert listed.iloc[0]["severity"] == "high" and listed.iloc[0]["identity_text"] == "service=Twilio SendGrid"
    assert any("5x its usual 8" in m.value.replace("\\", "") for m in at.markdown)
    evidence = frame_with(at, "report_id")
    assert set(evidence["report_id"]) == {"g-alpha-13", "g-alpha-14"}
    series_chart = at.get("plotly_chart")[0].proto.spec
    assert "Baseline (28-day median)" in series_chart
    at.text_input[0].input("new newsletter, expected")
    submit = next(b for b in at.button if b.label == "Acknowledge")
    at = submit.click().run()
    no_exception(at)
    with duckdb.connect(str(known_db), read_only=True) as con:
        status, note = con.execute("SELECT status, ack_note FROM v_anomalies WHERE anomaly_id = 'an-1'").fetchone()
    assert (status, note) == ("acknowledged", "new newsletter, expected")
    assert metrics(at)["Open"] == "0"


@pytest.fixture(scope="module")
def spine_only_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database where detection (migration 0003) never ran: no anomalies tables at all."""
    root = tmp_path_factory.mktemp("spine")
    folder = write_reports(root / "reports", known_specs()[:6])
    db = root / "spine.duckdb"
    original = dbmod.migration_files
    mp = pytest.MonkeyPatch()
    mp.setattr(dbmod, "migration_files", lambda: [m for m in original() if m[0] != 3])
    try:
        ingest(folder, db)
    finally:
        mp.undo()
    with duckdb.connect(str(db), read_only=True) as con:
        versions = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
    assert {1, 4} <= versions and 3 not in versions
    return db


@pytest.mark.parametrize("page", PAGES)
def test_pages_read_cleanly_without_later_stages(page: str, spine_only_db: Path,
                                                 run_page: Callable[..., Any]) -> None:
    at = run_page(spine_only_db, page, period="All data")
    no_exception(at)
    if page == "anomalies":
        assert any("Detection has not run" in i.value for i in at.info)
    if page == "overview":
        assert metrics(at)["Anomalies"] == "–"


def test_empty_database_says_what_to_do(tmp_path: Path, run_page: Callable[..., Any]) -> None:
    db = tmp_path / "empty.duckdb"
    dbmod.connect(db).close()
    for page in PAGES:
        at = run_page(db, page)
        no_exception(at)
        assert any("dmarclens ingest" in i.value for i in at.info), page


def test_password_gate(known_db: Path, app_env: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from dashboards.auth import hash_password

    from .conftest import APP

    app_env(known_db)
    monkeypatch.setenv("DMARCLENS_DASHBOARD_PASSWORD_HASH", hash_password("correct horse"))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.metric and at.text_input[0].label == "Password"
    at.text_input[0].input("wrong")
    at = at.button[0].click().run()
    assert any("Wrong password" in e.value for e in at.error) and not at.metric
    at.text_input[0].input("correct horse")
    at = at.button[0].click().run()
    no_exception(at)
    assert metrics(at)["Messages"]


def test_enrichment_results_are_shown(known_db: Path, run_page: Callable[..., Any]) -> None:
    """Traffic classes and DNS posture (migration 0002's columns and tables) appear once filled."""
    con = dbmod.connect(known_db)
    try:
        con.execute("UPDATE records SET traffic_class = CASE WHEN dmarc_pass THEN 'authorized' "
                    f"WHEN source_ip = '{FORWARDER_IP}' THEN 'forwarded' ELSE 'spoofed' END")
        con.execute("""INSERT INTO posture_checks (checked_at, domain, dmarc_status, p, policy_strength, spf_status,
                           spf_lookups, spf_all, findings)
                       VALUES (now(), 'alpha.example', 'ok', 'none', 'monitoring only', 'ok', 3, '~all',
                               ['p=none: failing mail is delivered', 'SPF authorises spf.protection.outlook.com'])""")
        check_id = con.execute("SELECT max(check_id) FROM posture_checks").fetchone()[0]
        con.execute("""INSERT INTO posture_spf_includes (check_id, domain, include, depth, platform, multi_tenant,
                           status, messages, unused)
                       VALUES (?, 'alpha.example', 'spf.protection.outlook.com', 1, 'Microsoft 365', true, 'ok',
                               1500, false)""", [check_id])
    finally:
        con.close()
    at = run_page(known_db, "sources", period="All data")
    no_exception(at)
    ips = frame_with(at, "traffic_class").set_index("source_ip")
    assert ips.loc[FORWARDER_IP, "traffic_class"] == "forwarded"
    assert ips.loc[SENDGRID_IP, "traffic_class"] == "authorized, spoofed"
    assert any("Traffic classes" in c.proto.spec for c in at.get("plotly_chart"))
    at = run_page(known_db, "readiness")
    no_exception(at)
    text = " ".join(m.value for m in at.markdown).replace("\\", "")
    assert "p=none: failing mail is delivered" in text
    includes = frame_with(at, "multi_tenant")
    assert includes.iloc[0]["include"] == "spf.protection.outlook.com"
