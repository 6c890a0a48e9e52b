"""Benchmark `dmarclens fetch` against a local Dovecot: messages/s, peak RSS, IDLE latency.

What is measured, and why this way: users time the whole cron command, so the
one-shot figure is wall time of the real CLI process (`python -m dmarclens
fetch`, start-up, TLS, login, parse, DuckDB commits, MOVEs) over N report
messages, and peak RSS is that process's own maximum (``os.wait4``). Running
it at 2,000 and at 10,000 messages shows whether memory stays bounded (it
should not grow with the mailbox: fetching is batched). The watch figure is the
time from APPEND to the message sitting in the archive folder.

Mail is built by ``dmarclens.generator.many_small_reports`` (distinct reports,
1-20 records each, as .zip / .xml.gz / .xml attachments) and appended with
MULTIAPPEND. Needs Dovecot (scripts/install-test-deps.sh).

Usage:
    python benchmarks/imap.py                       # 2,000 messages, batch 100
    python benchmarks/imap.py --messages 10000 --messages 2000 --batch-size 100 --idle-samples 5
"""

from __future__ import annotations

import argparse
import json
import os
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

from dmarclens.generator import Attachment, MailMeta, many_small_reports, report_email  # noqa: E402
from tests.servers.dovecot import Dovecot  # noqa: E402

_TYPES = {".zip": "application/zip", ".gz": "application/gzip", ".xml": "text/xml"}


def report_mails(n: int, seed: int = 3) -> list[bytes]:
    when = datetime(2026, 1, 2, 8, 0, tzinfo=UTC)
    out = []
    for i, (name, data) in enumerate(many_small_reports(n, seed=seed)):
        ctype = _TYPES[Path(name).suffix]
        meta = MailMeta("noreply-dmarc@reporter.example", "dmarc@example.com",
                        f"Report Domain: example.com Submitter: reporter.example Report-ID: {i}",
                        when, f"<bench-{seed}-{i}@reporter.example>")
        out.append(report_email([Attachment(name, data, ctype)], meta))
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


def one_shot(server: Dovecot, n: int, batch_size: int, workdir: Path) -> OneShot:
    user, password = server.new_user(f"bench{n}")
    fill(server, user, report_mails(n))
    db = workdir / f"bench-{n}.duckdb"
    env = dict(os.environ, DMARCLENS_IMAP_PASSWORD=password)
    start = time.monotonic()
    proc = subprocess.Popen(cli(server, user, db, "--batch-size", str(batch_size), "--json"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"fetch failed ({proc.returncode}):\n{err}")
    summary = json.loads(out)
    if summary["stored"] != n or server.list_folder(user, "INBOX"):
        raise SystemExit(f"expected {n} stored and an empty INBOX, got {summary['stored']}")
    return OneShot(n, batch_size, wall, summary["seconds"], usage.ru_maxrss / 1024, summary["stored"])


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
    ap.add_argument("--idle-samples", type=int, default=5)
    args = ap.parse_args()
    sizes = args.messages or [2000]
    with tempfile.TemporaryDirectory(prefix="dmarclens-bench-imap-") as tmp, Dovecot(oauth2=False) as server:
        workdir = Path(tmp)
        rows = [one_shot(server, n, args.batch_size, workdir) for n in sizes]
        idle = idle_latency(server, args.idle_samples, workdir) if args.idle_samples else []
    print(f"dmarclens fetch, one-shot, implicit TLS to local Dovecot {datetime.now(UTC):%Y-%m-%d}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print()
    print("| messages | batch | wall s (whole CLI) | in-run s | messages/s | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.messages:,} | {r.batch_size} | {r.wall_s:.1f} | {r.inner_s:.1f} | {r.per_second:.0f} | "
              f"{r.peak_rss_mb:.0f} |")
    if idle:
        print()
        print(f"watch (IDLE): APPEND → archived, {len(idle)} samples: median {statistics.median(idle):.2f} s, "
              f"max {max(idle):.2f} s")


if __name__ == "__main__":
    main()
