"""Dashboard at scale: ≈10 M records (1 year, 50 domains), each page's queries and its render time.

Why synthetic rows inserted with SQL: parsing 146,000 XML reports would take
longer than the whole benchmark and measures ingest, not the dashboard. The
rows follow the realistic mix the generator uses (the domain's own Microsoft
365 and Google pools rotating weekly, an ESP, the domain's own MTA,
forwarders and mailing lists, spoofers from a large pool), one report per
reporter per domain per day, records day-clustered as daily ingest leaves
them, and the rollup built exactly as ingest maintains it.

Prints, per page: the server-side time of that page's queries (median of 5,
each on a fresh read-only connection, as a render does) and the full render
in Debian Chromium (median of 5, cache busted before each by touching the
file, so every render really queries). Targets: queries ≤ 1 s, render ≤ 3 s.

Example:
    python benchmarks/dashboard.py                       # build /tmp/dmarclens-bench/dash10m.duckdb, measure
    python benchmarks/dashboard.py --records 1000000     # a smaller world
    python benchmarks/dashboard.py --db /tmp/x.duckdb --reuse
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dmarclens.query import anomalies as q_anomalies  # noqa: E402
from dmarclens.query import posture as q_posture  # noqa: E402
from dmarclens.query import reports as q_reports  # noqa: E402
from dmarclens.query import traffic as q_traffic  # noqa: E402
from dmarclens.query.filters import Filters  # noqa: E402
from dmarclens.store import rollups  # noqa: E402
from dmarclens.store.db import connect  # noqa: E402
from dmarclens.store.sql import has_table  # noqa: E402

START = date(2025, 11, 1)
REPORTERS = ["google.com", "Enterprise Outlook", "Yahoo", "Mimecast", "comcast.net", "Mail.Ru", "GMX", "Proofpoint"]


def build(path: Path, *, domains: int, days: int, records: int) -> None:
    """Create the database with ≈``records`` rows."""
    if path.exists():
        path.unlink()
    per_report = max(8, round(records / (domains * days * len(REPORTERS))))
    lo, hi = per_report - per_report // 3, per_report + per_report // 3
    con = connect(path)
    t0 = time.perf_counter()
    try:
        con.execute("SET preserve_insertion_order = true")
        con.execute(f"CREATE TEMP TABLE doms AS SELECT i AS d, 'domain' || i || '.example' AS domain FROM range({domains}) t(i)")
        con.execute("CREATE TEMP TABLE reps AS SELECT * FROM (VALUES "
                    + ", ".join(f"({i}, '{name}')" for i, name in enumerate(REPORTERS)) + ") t(r, org)")
        con.execute(f"CREATE TEMP TABLE days AS SELECT DATE '{START}' + i::INTEGER AS day, i AS dn FROM range({days}) t(i)")
        con.execute(f"""CREATE TEMP TABLE rep AS
            SELECT md5(domain || '|' || org || '|' || day::VARCHAR) AS report_key, d, domain, r, org, day, dn,
                   {lo} + (hash(d, r, dn) % {hi - lo + 1})::INTEGER AS nrec,
                   CASE d % 3 WHEN 0 THEN 'none' WHEN 1 THEN 'quarantine' ELSE 'reject' END AS p
            FROM doms, reps, days ORDER BY day, d, r""")
        con.execute("""INSERT INTO reports (report_key, org_name, org_email, report_id, domain, begin_ts, end_ts,
                span_seconds, adkim, aspf, p, sp, pct, format, xml_schema, reporter_errors, parser, origin,
                raw_sha256, record_count, message_count, ingest_run_id, ingested_at)
            SELECT report_key, org, 'dmarc@' || replace(lower(org), ' ', '') || '.example',
                   'bench-' || substr(report_key, 1, 12), domain, day::TIMESTAMPTZ,
                   day::TIMESTAMPTZ + INTERVAL 86399 SECOND, 86399, 'r', 'r', p, p, 100, 'rfc7489', '1.0',
                   []::VARCHAR[], 'synthetic', 'benchmarks/dashboard.py', md5(report_key || 'raw'), nrec, 0,
                   'bench-run', now()
            FROM rep ORDER BY day, d, r""")
        # kind by record slot: 0-29% Microsoft 365, 30-44% Google, 45-56% ESP, 57-62% own MTA,
        # 63-73% forwarders / lists, 74-99% spoofers (percent of the report's rows).
        con.execute(f"""CREATE TEMP TABLE rows AS
            SELECT rep.*, k, hash(report_key, k) AS h, (100 * k) // nrec AS slot, dn // 7 AS wk
            FROM rep, range({hi}) t(k) WHERE k < nrec""")
        con.execute("""CREATE TEMP TABLE gen AS SELECT *,
              CASE WHEN slot < 30 THEN 'm365' WHEN slot < 45 THEN 'google' WHEN slot < 57 THEN 'esp'
                   WHEN slot < 63 THEN 'own' WHEN slot < 74 THEN 'fwd' ELSE 'spoof' END AS kind,
              CASE WHEN slot < 30 THEN '40.107.' || ((d * 7 + k) % 200) || '.' || (hash(d, k, wk) % 250 + 2)
                   WHEN slot < 45 THEN '209.85.' || ((k * 3 + d) % 256) || '.' || (hash(d, k, wk, 1) % 250 + 2)
                   WHEN slot < 57 THEN '167.89.' || (d % 40) || '.' || (k % 8 + 10)
                   WHEN slot < 63 THEN '198.18.' || d || '.' || (k % 4 + 1)
                   WHEN slot < 74 THEN '85.' || ((h % 3000) // 250) || '.' || (h % 250) || '.' || (h % 7 + 1)
                   ELSE (100 + (h % 300000) // 65536 % 100) || '.' || ((h % 300000) // 256 % 256) || '.'
                        || (h % 256) || '.' || (h % 250 + 1) END AS ip
            FROM rows""")
        con.execute("""INSERT INTO records (report_key, day, interval_begin, interval_end, source_ip, count,
                disposition, policy_dkim, policy_spf, dkim_aligned, spf_aligned, dmarc_pass, override_reasons,
                header_from, envelope_from, envelope_to, dkim, spf, ingest_run_id)
            SELECT report_key, day, day::TIMESTAMPTZ, day::TIMESTAMPTZ + INTERVAL 86399 SECOND, ip,
                   (CASE kind WHEN 'm365' THEN 1 + h % 60 WHEN 'google' THEN 1 + h % 30 WHEN 'esp' THEN 1 + h % 40
                              WHEN 'own' THEN 1 + h % 20 WHEN 'fwd' THEN 1 + h % 5 ELSE 1 + h % 3 END)::BIGINT,
                   CASE WHEN pass THEN 'none' WHEN kind = 'fwd' AND h % 2 = 0 THEN 'none' ELSE p END,
                   CASE WHEN dk THEN 'pass' ELSE 'fail' END, CASE WHEN sp THEN 'pass' ELSE 'fail' END,
                   dk, sp, pass,
                   CASE WHEN kind = 'fwd' AND h % 2 = 0 THEN [{'type': 'forwarded', 'comment': NULL}]
                        ELSE []::STRUCT("type" VARCHAR, "comment" VARCHAR)[] END,
                   domain,
                   CASE kind WHEN 'fwd' THEN 'lists.example' WHEN 'spoof' THEN 'mailer' || (h % 97) || '.example'
                             WHEN 'esp' THEN 'bounce.' || domain ELSE domain END,
                   NULL,
                   [{'domain': CASE WHEN kind = 'spoof' THEN 'spoof.example' ELSE domain END,
                     'selector': CASE kind WHEN 'm365' THEN 'selector1' WHEN 'google' THEN 'google'
                                           WHEN 'esp' THEN 's1' ELSE 'mail' END,
                     'result': CASE WHEN dk OR kind = 'fwd' THEN 'pass' ELSE 'fail' END}],
                   [{'domain': CASE kind WHEN 'spoof' THEN 'mailer.example' ELSE domain END, 'scope': 'mfrom',
                     'result': CASE WHEN sp THEN 'pass' ELSE 'fail' END}],
                   'bench-run'
            FROM (SELECT *,
                    kind IN ('m365', 'google', 'own') OR (kind = 'esp' AND NOT (d % 5 = 0 AND dn % 60 < 10)) AS dk,
                    kind IN ('m365', 'google', 'own') AS sp
                  FROM gen) g,
                 LATERAL (SELECT dk OR sp AS pass)
            ORDER BY day, d, r, k""")
        con.execute("""UPDATE reports SET message_count = s.m FROM
                       (SELECT report_key, sum(count) AS m FROM records GROUP BY 1) s
                       WHERE reports.report_key = s.report_key""")
        con.execute("""INSERT INTO ip_info (ip, country, asn, as_name, as_domain, service_name, service_type,
                service_source, offline_resolved_at)
            SELECT ip,
                   CASE WHEN ip LIKE '40.107.%' THEN ['IE', 'NL', 'US'][(1 + hash(ip) % 3)::BIGINT]
                        WHEN ip LIKE '209.85.%' OR ip LIKE '167.89.%' THEN 'US'
                        WHEN ip LIKE '198.18.%' THEN 'DE' WHEN ip LIKE '85.%' THEN ['DE', 'FR', 'GB'][(1 + hash(ip) % 3)::BIGINT]
                        ELSE ['CN', 'RU', 'BR', 'IN', 'VN', 'US', 'NG', 'ID', 'UA', 'TR'][(1 + hash(ip) % 10)::BIGINT] END,
                   CASE WHEN ip LIKE '40.107.%' THEN 8075 WHEN ip LIKE '209.85.%' THEN 15169
                        WHEN ip LIKE '167.89.%' THEN 11377 WHEN ip LIKE '198.18.%' THEN 64500
                        ELSE 60000 + hash(ip) % 40 END,
                   CASE WHEN ip LIKE '40.107.%' THEN 'Microsoft Corporation' WHEN ip LIKE '209.85.%' THEN 'Google LLC'
                        WHEN ip LIKE '167.89.%' THEN 'SendGrid, Inc.' WHEN ip LIKE '198.18.%' THEN 'Example Hosting'
                        WHEN ip LIKE '85.%' THEN 'List Hosting ' || (hash(ip) % 5)
                        ELSE 'Network ' || (hash(ip) % 40) END,
                   NULL,
                   CASE WHEN ip LIKE '40.107.%' THEN 'Microsoft' WHEN ip LIKE '209.85.%' THEN 'Google'
                        WHEN ip LIKE '167.89.%' THEN 'Twilio SendGrid' END,
                   CASE WHEN ip LIKE '40.107.%' OR ip LIKE '209.85.%' THEN 'Email Provider'
                        WHEN ip LIKE '167.89.%' THEN 'Marketing' END,
                   'as_domain', now()
            FROM (SELECT DISTINCT source_ip AS ip FROM records)""")
        con.execute("""INSERT INTO ingest_runs (run_id, started_at, finished_at, command, items_seen, stored)
                       SELECT 'bench-run', now() - INTERVAL 1 HOUR, now(), 'ingest', count(*), count(*) FROM reports""")
        con.execute("""INSERT INTO ingest_items (run_id, seen_at, origin_kind, origin, outcome, report_kind, report_key,
                           domain, reason)
                       SELECT 'bench-run', now(), 'file', 'bench/' || report_key || '.xml', 'stored', 'aggregate',
                              report_key, domain, NULL FROM reports
                       UNION ALL
                       SELECT 'bench-run', now(), 'file', 'bench/bad-' || i || '.xml', 'rejected', 'unknown', NULL,
                              NULL, ['XML is truncated', 'not a DMARC report', 'empty file'][(1 + i % 3)::BIGINT]
                       FROM range(500) t(i)""")
        if has_table(con, "anomalies"):
            con.execute("""INSERT INTO anomalies (anomaly_id, kind, severity, severity_rank, score, domain,
                    identity_key, identity, first_day, last_day, messages, expected, passed, failed, dmarc,
                    explanation, ips, report_keys, report_ids, reporters, details, repeat_rule,
                    first_detected_at, last_detected_at)
                SELECT 'bench-' || i, ['volume_spike', 'new_source', 'spoofing_burst'][(1 + i % 3)::BIGINT],
                       ['critical', 'high', 'medium', 'low'][(1 + i % 4)::BIGINT], 4 - i % 4, 5.0,
                       'domain' || (i % 50) || '.example', 'service=Microsoft', '{"service": "Microsoft"}',
                       DATE '{START}' + ({DAYS} - 25 + i % 20)::INTEGER, DATE '{START}' + ({DAYS} - 24 + i % 20)::INTEGER,
                       500 + i, 50, 500, i, 'pass', 'Microsoft sent ' || (500 + i) || ' messages, 10x its usual.',
                       ['40.107.1.' || (i % 250)], []::VARCHAR[], []::VARCHAR[], ['google.com'], '{}', 'severity',
                       now(), now()
                FROM range(300) t(i)""".replace("{START}", str(START)).replace("{DAYS}", str(days)))
        con.execute("CHECKPOINT")
        rows = rollups.rebuild(con)
        con.execute("CHECKPOINT")
        n = con.execute("SELECT count(*) FROM records").fetchone()[0]
        ips = con.execute("SELECT count(*) FROM ip_info").fetchone()[0]
    finally:
        con.close()
    print(f"built {path}: {n:,} records, {ips:,} IPs, {rows:,} rollup rows, "
          f"{path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s", flush=True)


def page_calls(con: Any, last: date) -> dict[str, list[tuple[Callable[..., Any], tuple[Any, ...]]]]:
    """The query-layer calls each page makes for the default view (all domains, last 30 days)."""
    f = Filters(start=last - timedelta(days=29), end=last)
    prev = Filters(start=f.start - timedelta(days=30), end=f.start - timedelta(days=1))
    top = q_traffic.sources_overview(con, f, None, None, 1)["ips"]
    ip = str(top.iloc[0]["source_ip"])
    rep = q_reports.reports_page(con, f, None, 1)
    key = str(rep.iloc[0]["report_key"])
    found = q_anomalies.anomalies(con, f, "all")
    sidebar = [(q_traffic.domains, ()), (q_traffic.data_bounds, ())]
    anomaly_calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [(q_anomalies.anomalies, (f, "open"))]
    if found is not None and not found.empty:
        a = found.iloc[0]
        anomaly_calls += [
            (q_anomalies.anomaly_by_id, (str(a["anomaly_id"]),)),
            (q_anomalies.identity_series, (str(a["domain"]), {"service": "Microsoft"}, last - timedelta(days=90), last, [])),
            (q_reports.reports_by_keys, ([],)),
        ]
    return {
        "Overview": sidebar + [(q_traffic.overview_daily, (f,)), (q_traffic.totals, (f,)), (q_traffic.domain_summary, (f,)),
                               (q_anomalies.open_anomaly_counts, (f,)), (q_traffic.totals, (prev,))],
        "Sources": sidebar + [(q_traffic.sources_overview, (f, None, None, 200)), (q_traffic.traffic_classes, (f,)),
                              (q_traffic.totals, (f,))],
        "Sources: one service": [(q_traffic.sources_overview, (f, "Microsoft", None, 200))],
        "Sources: one IP": [(q_traffic.source_info, (ip,)), (q_traffic.source_history, (f, ip)), (q_traffic.source_reports, (f, ip)),
                            (q_traffic.source_identifiers, (f, ip))],
        "Anomalies": sidebar + anomaly_calls,
        "Policy readiness": sidebar + [(q_posture.readiness_sources, (f,)), (q_traffic.domain_summary, (f,)),
                                       (q_traffic.days_with_data, (f,)), (q_posture.posture, ((),))],
        "Reports": sidebar + [(q_traffic.reporters, (f,)), (q_reports.reports_page, (f, None, 1000))],
        "Reports: one report": [(q_reports.report_meta, (key,)), (q_reports.report_detail_records, (key,))],
        "Ingest health": sidebar + [(q_reports.ingest_runs, (50,)), (q_reports.rejected_items, (500,)), (q_reports.rejection_reasons, ()),
                                    (q_reports.ingest_item_counts, ()), (q_reports.reporter_activity, (Filters(),))],
    }


def time_queries(db: Path, runs: int = 5) -> list[tuple[str, float, str]]:
    """Median wall time of each page's queries on a fresh read-only connection; slowest call named."""
    con = connect(db, read_only=True)
    try:
        _, last = q_traffic.data_bounds(con)
        plan = page_calls(con, last)
    finally:
        con.close()
    out = []
    for page, calls in plan.items():
        totals: list[float] = []
        per_call: dict[str, list[float]] = {}
        for _ in range(runs):
            t0 = time.perf_counter()
            con = connect(db, read_only=True)
            try:
                for fn, args in calls:
                    c0 = time.perf_counter()
                    fn(con, *args)
                    per_call.setdefault(fn.__name__, []).append(time.perf_counter() - c0)
            finally:
                con.close()
            totals.append(time.perf_counter() - t0)
        slowest = max(per_call, key=lambda n: statistics.median(per_call[n]))
        out.append((page, statistics.median(totals), f"{slowest} {statistics.median(per_call[slowest]):.3f}s"))
        print(f"  queries  {page:22s} {statistics.median(totals):6.3f} s   (slowest: {out[-1][2]})", flush=True)
    return out


RENDER_PAGES: list[tuple[str, str, int]] = [
    ("Overview", "", 4), ("Sources", "sources", 2), ("Anomalies", "anomalies", 1),
    ("Policy readiness", "readiness", 1), ("Reports", "reports", 1), ("Ingest health", "ingest", 0),
]


def time_renders(db: Path, runs: int = 5) -> list[tuple[str, float]]:
    """Median time from navigation to a finished, fully drawn page in Chromium (cache busted each time)."""
    from playwright.sync_api import sync_playwright

    from dashboards.launch import APP_OPTIONS
    from tests.servers.browser import launch_chromium, new_page
    from tests.servers.streamlit_app import StreamlitServer, exceptions, wait_for_app_idle, wait_for_plotly

    out = []
    env = {"DMARCLENS_DB": str(db), "DMARCLENS_CONFIG": "", "DMARCLENS_DASHBOARD_PASSWORD_HASH": ""}
    with StreamlitServer(REPO / "dashboards" / "app.py", env=env, streamlit_options=APP_OPTIONS) as server, \
            sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            context, page = new_page(browser, timeout_ms=120_000)
            page.goto(server.url)  # load the front end once
            wait_for_app_idle(page, timeout=120)
            for label, path, charts in RENDER_PAGES:
                times = []
                for _ in range(runs):
                    os.utime(db)  # new stamp: the render really queries (no cached answers)
                    t0 = time.perf_counter()
                    page.goto(f"{server.url}/{path}")
                    wait_for_app_idle(page, timeout=120)
                    if charts:
                        wait_for_plotly(page, count=charts, timeout=120)
                    times.append(time.perf_counter() - t0)
                    if exceptions(page):
                        raise RuntimeError(f"{label}: {exceptions(page)[0][:300]}")
                out.append((label, statistics.median(times)))
                print(f"  render   {label:22s} {out[-1][1]:6.2f} s", flush=True)
            context.close()
        finally:
            browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=Path("/tmp/dmarclens-bench/dash10m.duckdb"))
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--domains", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--reuse", action="store_true", help="use an existing --db instead of rebuilding it")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium render timings")
    args = parser.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    if not (args.reuse and args.db.exists()):
        build(args.db, domains=args.domains, days=args.days, records=args.records)
    print(f"machine: {os.cpu_count()} cores; DuckDB file {args.db.stat().st_size / 1e9:.2f} GB", flush=True)
    queries = time_queries(args.db)
    renders: list[tuple[str, float]] = [] if args.no_browser else time_renders(args.db)
    render_of: Callable[[str], str] = lambda page: next(  # noqa: E731
        (f"{t:.2f}" for p, t in renders if p == page), "–")
    print("\n| Page | Queries, median of 5 (s) | Slowest call | Render in Chromium, median of 5 (s) |")
    print("| --- | ---: | --- | ---: |")
    for page, t, slowest in queries:
        print(f"| {page} | {t:.3f} | {slowest} | {render_of(page)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
