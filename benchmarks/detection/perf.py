"""Detection speed at scale: ~10 M records, one year, 50 domains.

Why synthetic rows straight into DuckDB: rendering and parsing ten million
records through XML would take an hour and measure the parser, not the
detector. The rows are generated in SQL with the shape real data has: seven
receivers with their shares and skipped days, per domain a Microsoft 365
pool of eight /24s, Google Workspace, SendGrid, Amazon SES, a forwarder, a
mailing list and background forgery from thousands of addresses; DKIM and
SPF result lists, envelope_to from one receiver, weekday rhythm. ``ip_info``
is filled by the same offline enricher ingest uses.

Then ``dmarclens detect`` runs as a user would run it (a new process, timed
from outside), twice: a cold first run that stores everything, and a second
run that only updates.

    python benchmarks/detection/perf.py                       # 10 M records
    python benchmarks/detection/perf.py --records 1000000     # quicker look
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dmarclens.store.db import connect
from dmarclens.store.write import RECORD_COLUMNS

M365 = ["40.107.20", "40.107.22", "40.107.23", "40.107.104", "40.107.105", "52.101.66", "52.101.69", "52.101.70"]
GOOGLE = ["209.85.208", "209.85.210", "209.85.214", "209.85.216", "209.85.218", "209.85.219", "209.85.221"]
SES = ["54.240.8", "54.240.9", "54.240.10", "54.240.11"]
SENDGRID = ["167.89.54.131", "167.89.55.20", "149.72.160.17", "149.72.161.40"]
FWD = ["103.168.172.150", "103.168.172.152", "103.168.172.157"]
LISTS = ["134.76.10.46", "134.76.10.47"]
SPOOF = ["142.93", "134.209", "104.248", "178.62", "45.155.205", "89.248.165", "103.152.220", "113.160", "14.160",
         "117.1", "36.66", "201.1", "73.1", "185.220.101", "5.188.206", "91.240.118", "41.1", "77.1", "62.210", "51.15"]
# (org name, share of a domain's mail, probability of skipping a day, envelope_to?)
REPORTERS = [("google.com", 0.40, 0.00, False), ("Enterprise Outlook", 0.28, 0.00, True), ("Yahoo", 0.10, 0.05, False),
             ("Mimecast", 0.08, 0.00, False), ("comcast.net", 0.06, 0.10, False),
             ("receiver.example", 0.05, 0.03, False), ("Legacy ISP", 0.03, 0.02, False)]


def sql_list(items: list[str]) -> str:
    return "[" + ", ".join(f"'{x}'" for x in items) + "]"


def generate(db: Path, records: int, domains: int, days: int) -> dict[str, float]:
    t0 = time.monotonic()
    con = connect(db)
    try:
        # rows per report proportional to the reporter's share, scaled to the target
        # (0.93 = mean weekday factor of 1.1 on weekdays and 0.5 at weekends)
        share_days = sum(days * (1 - skip) * share for _, share, skip, _ in REPORTERS)
        per_share = records / (domains * share_days * 0.93)
        con.execute("CREATE TEMP TABLE rep_cfg (r INTEGER, org VARCHAR, share DOUBLE, skip DOUBLE, env_to BOOLEAN)")
        con.executemany("INSERT INTO rep_cfg VALUES (?, ?, ?, ?, ?)",
                        [[i, o, s, k, e] for i, (o, s, k, e) in enumerate(REPORTERS)])
        con.execute(f"""
            CREATE TEMP TABLE p_rep AS
            SELECT md5(d::VARCHAR || '|' || c.r::VARCHAR || '|' || day::VARCHAR) AS report_key,
                   'domain' || lpad(d::VARCHAR, 2, '0') || '.example' AS domain, d, c.r, c.org, c.env_to,
                   DATE '2025-01-01' + day::INTEGER AS day,
                   greatest(1, round({per_share} * c.share * (0.8 + (hash(d, c.r, day, 1) % 400) / 1000.0)
                        * CASE WHEN dayofweek(DATE '2025-01-01' + day::INTEGER) IN (0, 6) THEN 0.5 ELSE 1.1 END
                   ))::INTEGER AS n
            FROM range({domains}) t(d), rep_cfg c, range({days}) u(day)
            WHERE (hash(d, c.r, day) % 1000) >= c.skip * 1000
        """)
        con.execute("""
            INSERT INTO reports (report_key, org_name, org_email, report_id, domain, begin_ts, end_ts, span_seconds,
                                 adkim, aspf, p, format, parser, origin, raw_sha256, record_count, message_count,
                                 ingest_run_id, ingested_at)
            SELECT report_key, org, 'dmarc@' || org, substr(report_key, 1, 20), domain,
                   day::TIMESTAMPTZ, day::TIMESTAMPTZ + INTERVAL 86399 SECOND, 86399, 'r', 'r',
                   CASE d % 3 WHEN 0 THEN 'reject' WHEN 1 THEN 'quarantine' ELSE 'none' END,
                   'rfc7489', 'synthetic', 'perf.py', report_key, n, 0, 'perf', now()
            FROM p_rep
        """)
        con.execute("""
            CREATE TEMP TABLE p_rows AS
            SELECT p.report_key, p.domain, p.day, p.env_to, j,
                   (hash(p.report_key, j) % 4294967296)::BIGINT AS h,
                   (hash(p.report_key, j, 7) % 4294967296)::BIGINT AS h2,
                   (hash(p.report_key, j, 11) % 4294967296)::BIGINT AS h3
            FROM p_rep p, range(p.n) t(j)
        """)
        con.execute(f"""
            INSERT INTO records ({RECORD_COLUMNS})
            WITH x AS (
                SELECT *, h % 100 AS prof FROM p_rows
            ), y AS (
                SELECT x.*,
                  CASE WHEN prof < 38 THEN 'm365' WHEN prof < 52 THEN 'google' WHEN prof < 64 THEN 'sendgrid'
                       WHEN prof < 76 THEN 'ses' WHEN prof < 80 THEN 'fwd' WHEN prof < 82 THEN 'list'
                       ELSE 'spoof' END AS kind
                FROM x
            )
            SELECT report_key, day, day::TIMESTAMPTZ, day::TIMESTAMPTZ + INTERVAL 86399 SECOND,
              CASE kind
                WHEN 'm365' THEN {sql_list(M365)}[1 + h2 % 8] || '.' || (2 + h3 % 120)::VARCHAR
                WHEN 'google' THEN {sql_list(GOOGLE)}[1 + h2 % 7] || '.' || (2 + h3 % 200)::VARCHAR
                WHEN 'sendgrid' THEN {sql_list(SENDGRID)}[1 + h2 % 4]
                WHEN 'ses' THEN {sql_list(SES)}[1 + h2 % 4] || '.' || (2 + h3 % 100)::VARCHAR
                WHEN 'fwd' THEN {sql_list(FWD)}[1 + h2 % 3]
                WHEN 'list' THEN {sql_list(LISTS)}[1 + h2 % 2]
                ELSE {sql_list(SPOOF)}[1 + h2 % 20] ||
                     CASE WHEN (h2 % 20) IN (4, 5, 6, 13, 14, 15) THEN '' ELSE '.' || (h3 % 256)::VARCHAR END
                     || '.' || (1 + (h3 // 256) % 60)::VARCHAR
              END AS source_ip,
              CASE WHEN kind = 'spoof' THEN 1 + h3 % 4 ELSE 1 + h3 % 60 END AS count,
              CASE WHEN kind IN ('spoof') THEN 'reject' ELSE 'none' END,
              CASE WHEN kind IN ('spoof', 'list') THEN 'fail' ELSE 'pass' END,
              CASE WHEN kind IN ('m365', 'google', 'ses') THEN 'pass' ELSE 'fail' END,
              kind NOT IN ('spoof', 'list'),
              kind IN ('m365', 'google'),
              kind NOT IN ('spoof', 'list'),
              CASE WHEN kind = 'list' THEN [{{'type': 'mailing_list', 'comment': NULL}}]
                   ELSE []::STRUCT("type" VARCHAR, "comment" VARCHAR)[] END,
              domain,
              CASE kind WHEN 'm365' THEN domain WHEN 'google' THEN domain WHEN 'sendgrid' THEN 'em42.' || domain
                        WHEN 'ses' THEN 'amazonses.com' WHEN 'fwd' THEN 'messagingengine.com'
                        WHEN 'list' THEN 'lists.university.example' ELSE 'mailer' || (h3 % 50)::VARCHAR || '.test' END,
              CASE WHEN env_to THEN {sql_list(["outlook.com", "contoso.example", "fabrikam.example", "hotmail.com"])}[1 + h3 % 4]
                   ELSE NULL END,
              CASE kind
                WHEN 'm365' THEN [{{'domain': domain, 'selector': 'selector1', 'result': 'pass'}}]
                WHEN 'google' THEN [{{'domain': domain, 'selector': 'google', 'result': 'pass'}}]
                WHEN 'sendgrid' THEN [{{'domain': domain, 'selector': 's1', 'result': 'pass'}},
                                      {{'domain': 'sendgrid.info', 'selector': 'smtpapi', 'result': 'pass'}}]
                WHEN 'ses' THEN [{{'domain': domain, 'selector': 'ses1', 'result': 'pass'}},
                                 {{'domain': 'amazonses.com', 'selector': 'ses', 'result': 'pass'}}]
                WHEN 'fwd' THEN [{{'domain': domain, 'selector': 'selector1', 'result': 'pass'}}]
                WHEN 'list' THEN [{{'domain': domain, 'selector': 'selector1', 'result': 'fail'}},
                                  {{'domain': 'lists.university.example', 'selector': 'list', 'result': 'pass'}}]
                ELSE []::STRUCT("domain" VARCHAR, selector VARCHAR, result VARCHAR)[] END,
              CASE kind
                WHEN 'fwd' THEN [{{'domain': domain, 'scope': 'mfrom', 'result': 'softfail'}}]
                WHEN 'spoof' THEN [{{'domain': domain, 'scope': 'mfrom', 'result': 'fail'}}]
                ELSE [{{'domain': domain, 'scope': 'mfrom', 'result': 'pass'}}] END,
              'perf'
            FROM y
        """)
        con.execute("UPDATE reports SET message_count = s.m FROM (SELECT report_key, sum(count) m FROM records "
                    "GROUP BY 1) s WHERE reports.report_key = s.report_key")
        ips = {r[0] for r in con.execute("SELECT DISTINCT source_ip FROM records").fetchall()}
        from dmarclens.enrich.offline import OfflineEnricher
        from dmarclens.store.write import upsert_ip_facts

        with OfflineEnricher() as enricher:
            upsert_ip_facts(con, ips, enricher)
        n = con.execute("SELECT count(*), sum(count) FROM records").fetchone()
        nrep = con.execute("SELECT count(*) FROM reports").fetchone()[0]
    finally:
        con.close()
    return {"records": n[0], "messages": n[1], "reports": nrep, "ips": len(ips),
            "seconds": round(time.monotonic() - t0, 1)}


def timed_detect(db: Path) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds of the process, anomalies, stderr) of one `dmarclens detect` run."""
    import json
    import resource

    env = dict(os.environ)
    env.pop("DMARCLENS_DB", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "dmarclens", "detect", "--db", str(db), "--format", "json"],
                       capture_output=True, text=True, env=env, check=False)
    took = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return took, cpu, len(json.loads(r.stdout)), r.stderr.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--domains", type=int, default=50)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--db", type=Path, default=None, help="reuse/keep this database file")
    ap.add_argument("--repeat", type=int, default=4, help="detect runs (the first stores, the rest update)")
    args = ap.parse_args()
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="dmarclens-perf-")
        db = Path(tmp.name) / "perf.duckdb"
    else:
        db = args.db
    try:
        if not db.exists():
            info = generate(db, args.records, args.domains, args.days)
            print(f"generated {info['records']:,} records ({info['messages']:,} messages) in {info['reports']:,} "
                  f"reports, {info['ips']:,} IPs, in {info['seconds']} s", file=sys.stderr)
        con = connect(db, read_only=True)
        n = con.execute("SELECT count(*) FROM records").fetchone()[0]
        con.close()
        runs = [timed_detect(db) for _ in range(args.repeat)]
        cold = runs[0]
        warm = sorted(runs[1:] or runs, key=lambda x: x[0])
        median = warm[len(warm) // 2]
        load = os.getloadavg()[0]
        print("| records | domains | days | detect, first run | detect, re-run (best / median) | CPU per run | anomalies |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {n:,} | {args.domains} | {args.days} | {cold[0]:.1f} s | {warm[0][0]:.1f} s / {median[0]:.1f} s "
              f"| {median[1]:.1f} s | {cold[2]} |")
        print(f"(whole `dmarclens detect --format json` process, {os.cpu_count()} cores, load average {load:.1f} "
              f"at the end; {cold[3]})")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
