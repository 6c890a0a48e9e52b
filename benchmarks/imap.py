"""Benchmark `dmarclens fetch` against a local Dovecot: messages/s, peak RSS, IDLE latency.

What is measured, and why this way: users time the whole cron command, so the
one-shot figure is wall time of the real CLI process (`python -m dmarclens
fetch`, start-up, TLS, login, parse, DuckDB commits, MOVEs) over N report
messages, and peak RSS is that process's own maximum (``os.wait4``). Running
it at 2,000 and at 10,000 messages shows whether memory stays bounded (it
should not grow with the mailbox: fetching is batched). The watch figure is the
time from APPEND to the message sitting in the archive folder.

Mail is built with ``dmarclens.generator`` (distinct daily reports, 1-20
records each, attached as .zip / .xml.gz / octet-stream gzip / .xml the way
five receivers do) and appended with MULTIAPPEND. Needs Dovecot (scripts/install-test-deps.sh).

Usage:
    python benchmarks/imap.py                       # 2,000 messages, batch 100
    python benchmarks/imap.py --messages 2000 --messages 10000 --idle-samples 10
    python benchmarks/imap.py --messages 300 --records 1000 --idle-samples 0   # bigger reports
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dmarclens.generator import (  # noqa: E402
    DkimAuth,
    MailMeta,
    PolicySpec,
    RecordSpec,
    ReportSpec,
    SpfAuth,
    attachment_for,
    render_report,
    report_email,
    report_subject,
)
from tests.servers.dovecot import Dovecot  # noqa: E402


def report_mails(n: int, seed: int = 3, n_records: int = 0) -> list[bytes]:
    """``n`` report mails, each one distinct daily report with 1-20 records (or ``n_records``).

    Dates run back from 2025-12-31 (30 reports a day), so any ``n`` stays in the past: the
    store rejects reports whose interval ends in the future.
    """
    rng = random.Random(f"bench-imap|{seed}")
    receivers = [("google.com", "zip"), ("enterprise.protection.outlook.com", "gzip"), ("yahoo.com", "gzip"),
                 ("mimecast.com", "octet-gz"), ("receiver.example", "xml")]
    last_day = int(datetime(2025, 12, 31, tzinfo=UTC).timestamp())
    out = []
    for i in range(n):
        org, style = receivers[i % len(receivers)]
        domain = f"example{i % 3}.com"
        begin = last_day - (i // 30) * 86400
        records = [
            RecordSpec(
                source_ip=f"{rng.choice(('40.107.22', '209.85.218', '167.89.54', '54.240.9'))}.{rng.randint(2, 254)}",
                count=rng.randint(1, 400), header_from=domain, envelope_from=domain,
                dkim=(DkimAuth(domain, "selector1"),), spf=(SpfAuth(domain),),
            )
            for _ in range(n_records or rng.randint(1, 20))
        ]
        spec = ReportSpec(org_name=org, email=f"noreply-dmarc@{org}", report_id=f"bench-{seed}-{i}", begin=begin,
                          end=begin + 86399, policy=PolicySpec(domain=domain), records=records, receiver=org)
        meta = MailMeta(f"noreply-dmarc@{org}", "dmarc@example.com", report_subject(spec),
                        datetime(2026, 1, 2, 8, 0, tzinfo=UTC), f"<bench-{seed}-{i}@{org}>")
        out.append(report_email([attachment_for(spec, render_report(spec), style)], meta))  # type: ignore[arg-type]
    return out


def fill(server: Dovecot, user: str, mails: list[bytes], chunk: int = 250) -> None:
    with server.session(user) as c:
        for start in range(0, len(mails), chunk):
            c.multiappend("INBOX", mails[start:start + chunk])


def cli(server: Dovecot, user: str, db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dmarclens", "fetch", "--host", server.host, "--port", str(server.imaps_port),
            "--tls", "implicit", "--ca-file", str(server.ca_file), "--user", user, "--db", str(db), *extra]


@dataclass
class OneShot:
    messages: int
    batch_size: int
    wall_s: float
    inner_s: float
    peak_rss_mb: float
    stored: int

    @property
    def per_second(self) -> float:
        return self.messages / self.wall_s


def one_shot(server: Dovecot, n: int, batch_size: int, workdir: Path, records: int = 0) -> OneShot:
    user, password = server.new_user(f"bench{n}")
    fill(server, user, report_mails(n, n_records=records))
    db = workdir / f"{user}.duckdb"
    env = dict(os.environ, DMARCLENS_IMAP_PASSWORD=password)
    start = time.monotonic()
    err_path = workdir / f"{user}.stderr"
    with open(err_path, "w") as err_file:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(cli(server, user, db, "--batch-size", str(batch_size), "--json"),
                                env=env, stdout=subprocess.PIPE, stderr=err_file, text=True)
        out = proc.stdout.read()  # type: ignore[union-attr]
        _pid, status, usage = os.wait4(proc.pid, 0)
    err = err_path.read_text()
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"fetch failed ({proc.returncode}):\n{err}")
    summary = json.loads(out)
    if summary["stored"] != n or server.list_folder(user, "INBOX"):
        raise SystemExit(f"expected {n} stored and an empty INBOX, got {summary['stored']}")
    return OneShot(n, batch_size, wall, summary["seconds"], usage.ru_maxrss / 1024, summary["stored"])


def big_report(server: Dovecot, records: int, style: str, workdir: Path) -> tuple[float, float]:
    """One mail carrying one big report (``records`` records, 50,000 IPs at
    most) as a .xml.gz or a .zip attachment: fetch wall time and peak RSS."""
    import gzip
    import io
    import zipfile

    from dmarclens.generator import Attachment, MailMeta, big_report_xml, report_email

    xml = big_report_xml(records, min(records, 50_000), seed=records)
    if style == "gz":
        att = Attachment(f"google.com!example.com!{records}.xml.gz", gzip.compress(xml, 6))
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"google.com!example.com!{records}.xml", xml)
        att = Attachment(f"google.com!example.com!{records}.zip", buf.getvalue(), "application/zip")
    del xml
    meta = MailMeta("noreply-dmarc-support@google.com", "dmarc@example.com",
                    f"Report Domain: example.com Submitter: google.com Report-ID: big{records}",
                    datetime(2026, 10, 6, 8, tzinfo=UTC), f"<big{records}{style}@google.com>")
    user, password = server.new_user(f"big{records}{style}")
    fill(server, user, [report_email([att], meta)])
    db = workdir / f"{user}.duckdb"
    # Measured from a small fresh process: Linux carries the peak RSS of the
    # process that forks a command into the command's own ru_maxrss, and this
    # one has just held the 130 MB report.
    measure = ("import json, resource, subprocess, sys, time; t = time.monotonic(); "
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(json.dumps({'rc': p.returncode, 'out': p.stdout, 'wall': time.monotonic() - t, "
               "'peak': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    res = subprocess.run([sys.executable, "-c", measure, *cli(server, user, db, "--json")],
                         env=dict(os.environ, DMARCLENS_IMAP_PASSWORD=password), capture_output=True, text=True,
                         check=True)
    got = json.loads(res.stdout)
    if got["rc"] != 0 or json.loads(got["out"])["records"] != records:
        raise SystemExit(f"big report fetch failed: {got}")
    return got["wall"], got["peak"] / 1024


def idle_latency(server: Dovecot, samples: int, workdir: Path) -> list[float]:
    """Seconds from APPEND returning to the message being in the archive folder, per sample."""
    user, password = server.new_user("benchidle")
    mails = report_mails(samples, seed=11)
    db = workdir / "bench-idle.duckdb"
    env = dict(os.environ, DMARCLENS_IMAP_PASSWORD=password)
    proc = subprocess.Popen(cli(server, user, db, "--watch"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    latencies = []
    try:
        deadline = time.monotonic() + 30
        while "DMARC/Archive" not in server.folders(user):  # started: folders exist, IDLE is next
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("watcher did not start")
            time.sleep(0.05)
        time.sleep(0.5)
        for i, mail in enumerate(mails):
            server.append(user, "INBOX", mail)
            t0 = time.monotonic()
            while len(server.list_folder(user, "DMARC/Archive")) < i + 1:
                if time.monotonic() - t0 > 60:
                    raise SystemExit("message not ingested within 60 s")
                time.sleep(0.02)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, action="append", help="mailbox sizes to fetch (repeatable)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--records", type=int, default=0, help="records per report (default: 1-20, varied)")
    ap.add_argument("--idle-samples", type=int, default=5)
    ap.add_argument("--big-report", type=int, action="append", default=[],
                    help="also fetch one mail carrying one report of this many records, as .xml.gz and as .zip "
                         "(repeatable)")
    args = ap.parse_args()
    sizes = args.messages or [2000]
    with tempfile.TemporaryDirectory(prefix="dmarclens-bench-imap-") as tmp, Dovecot(oauth2=False) as server:
        workdir = Path(tmp)
        rows = [one_shot(server, n, args.batch_size, workdir, args.records) for n in sizes]
        idle = idle_latency(server, args.idle_samples, workdir) if args.idle_samples else []
        big = [(n, style, *big_report(server, n, style, workdir)) for n in args.big_report for style in ("gz", "zip")]
    size = f"{args.records} records" if args.records else "1-20 records"
    print(f"dmarclens fetch, one-shot, implicit TLS to local Dovecot {datetime.now(UTC):%Y-%m-%d}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; one report of {size} per message")
    print()
    print("| messages | batch | wall s (whole CLI) | in-run s | messages/s | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.messages:,} | {r.batch_size} | {r.wall_s:.1f} | {r.inner_s:.1f} | "
              f"{r.per_second:.0f} | {r.peak_rss_mb:.0f} |")
    if idle:
        print()
        print(f"watch (IDLE): APPEND → archived, {len(idle)} samples: median {statistics.median(idle):.2f} s, "
              f"max {max(idle):.2f} s")
    if big:
        print()
        print("| one mail, one report of | attached as | wall s (whole CLI) | records/s | peak RSS MB |")
        print("|---:|---|---:|---:|---:|")
        for n, style, wall, peak in big:
            print(f"| {n:,} records | .{'xml.gz' if style == 'gz' else 'zip'} | {wall:.2f} | {n / wall:,.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
