"""Reverse-DNS enrichment throughput against a local authoritative DNS server.

    python benchmarks/enrich.py                  # 10,000 IPs, 10% time out, 1 s timeout
    python benchmarks/enrich.py --ips 50000 --concurrency 512 --timeout-share 0.2

Target: 10,000 distinct IPs in <= 10 s wall time when 10% of the
PTR lookups time out at a 1 s timeout. Every answered PTR is forward-confirmed
(one A/AAAA lookup more), so 10,000 IPs are ~19,000 DNS queries.

The DNS server (tests/servers/dns.py, the one the tests use) runs in its own
process so its CPU does not share the interpreter lock with the code under
test, as a real resolver would not. Three measurements:

1. ``resolve_many``: the lookups alone;
2. ``dmarclens enrich`` as a library call on a DuckDB file whose ip_info
   holds the same IPs (read list, close, resolve, write one transaction);
3. the traffic-class refresh alone on the records of a generated world
   (no DNS), optionally copied into later weeks (``--classify-copies``) to
   time a table of a million rows.

Prints a table; results are recorded in benchmarks/enrich.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SLOW_EVERY = 10  # overridden by --timeout-share


def _ip(i: int) -> str:
    return str(ipaddress.IPv4Address(0x0A000000 + i))  # 10.0.0.0/8, distinct per i


def _fallback(name: str, qtype: str) -> list[str] | str | None:
    """Answers for generated names: PTR host-a-b-c-d.bench.example, its A record; every Nth PTR silent."""
    if name.endswith(".in-addr.arpa"):
        octets = name.split(".")[:4]
        index = int(octets[0]) + 256 * int(octets[1]) + 65536 * int(octets[2])
        if index % SLOW_EVERY == 0:
            return "timeout"
        ip = ".".join(reversed(octets))
        return [f"host-{ip.replace('.', '-')}.bench.example."]
    if name.startswith("host-") and name.endswith(".bench.example") and qtype == "A":
        return [name.split(".")[0][5:].replace("-", ".")]
    return None


def _serve(ready: mp.Queue, stop: mp.Event, slow_every: int) -> None:  # type: ignore[type-arg]
    global SLOW_EVERY
    SLOW_EVERY = slow_every
    from tests.servers.dns import DNSServer, Zone

    server = DNSServer(Zone(fallback=_fallback)).start()
    server.queries = _NoLog()  # type: ignore[assignment]
    ready.put(server.port)
    stop.wait()
    server.stop()


class _NoLog(list):  # type: ignore[type-arg]
    """The test server logs every question; for 20,000 of them that is only memory."""

    def append(self, item: object) -> None:
        pass


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def bench_resolve(port: int, n: int, timeout: float, concurrency: int) -> tuple[float, float, Counter[str]]:
    from dmarclens.enrich.rdns import resolve_many

    ips = [_ip(i) for i in range(n)]
    t0, c0 = time.perf_counter(), _cpu()
    results = resolve_many(ips, nameservers=[f"127.0.0.1:{port}"], timeout=timeout, concurrency=concurrency)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    assert len(results) == n
    return wall, cpu, Counter(r.status for r in results)


def bench_enrich_db(
    port: int, n: int, timeout: float, concurrency: int, folder: Path
) -> tuple[float, float, dict[str, int]]:
    import pyarrow as pa

    from dmarclens.enrich.rdns import enrich_db
    from dmarclens.store.db import open_db

    db = folder / "bench.duckdb"
    with open_db(db) as con:
        con.register("_ips", pa.table({"ip": [_ip(i) for i in range(n)]}))
        con.execute("INSERT INTO ip_info (ip, offline_resolved_at) SELECT ip, now() FROM _ips")
    t0, c0 = time.perf_counter(), _cpu()
    stats = enrich_db(db, nameservers=[f"127.0.0.1:{port}"], timeout=timeout, concurrency=concurrency)
    return time.perf_counter() - t0, _cpu() - c0, stats.by_status


def bench_classify(folder: Path, days: int, copies: int) -> tuple[int, float]:
    from datetime import date

    from dmarclens.enrich import classify
    from dmarclens.generator import build_world, render_report
    from dmarclens.ingest.writer import ingest_paths
    from dmarclens.store.db import open_db

    world = build_world(7, days, date(2026, 1, 1))
    reports = folder / "reports"
    reports.mkdir()
    for n, spec in enumerate(world.reports):
        (reports / f"{n:06d}.xml").write_bytes(render_report(spec))
    db = folder / "classify.duckdb"
    ingest_paths([reports], db)
    with open_db(db) as con:
        # Scale up by copying the rows into later weeks (same sources, new days).
        base_days = con.execute("SELECT max(day) - min(day) + 1 FROM records").fetchone()[0]  # type: ignore[index]
        for k in range(1, copies):
            con.execute("INSERT INTO records SELECT * REPLACE (day + ? AS day) FROM records "
                        "WHERE day < (SELECT min(day) FROM records) + ?", [k * base_days, base_days])
        records = con.execute("SELECT count(*) FROM records").fetchone()[0]  # type: ignore[index]
        con.execute("BEGIN")
        t0 = time.perf_counter()
        classify.refresh(con)
        wall = time.perf_counter() - t0
        con.execute("COMMIT")
    return int(records), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ips", type=int, default=10_000)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--timeout-share", type=float, default=0.10, help="share of PTR lookups never answered")
    ap.add_argument("--concurrency", type=int, default=None, help="default: dmarclens' default")
    ap.add_argument("--classify-days", type=int, default=60, help="days of generated reports; 0 skips")
    ap.add_argument("--classify-copies", type=int, default=1,
                    help="repeat the generated records this many times (later days) to time a bigger table")
    args = ap.parse_args()

    from dmarclens.enrich.rdns import DEFAULT_CONCURRENCY

    concurrency = args.concurrency or DEFAULT_CONCURRENCY
    slow_every = max(1, round(1 / args.timeout_share)) if args.timeout_share > 0 else 10**9
    ready: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    stop = mp.Event()
    proc = mp.Process(target=_serve, args=(ready, stop, slow_every), daemon=True)
    proc.start()
    port = ready.get(timeout=30)
    rows = []
    try:
        wall, cpu, by_status = bench_resolve(port, args.ips, args.timeout, concurrency)
        rows.append(("resolve_many", args.ips, wall, cpu, dict(sorted(by_status.items()))))
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu, by_status = bench_enrich_db(port, args.ips, args.timeout, concurrency, Path(tmp))
            rows.append(("enrich_db (read, DNS, write)", args.ips, wall, cpu, dict(sorted(by_status.items()))))
    finally:
        stop.set()
        proc.join(timeout=10)
    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.1f}; "
          f"timeout {args.timeout:g}s, {args.timeout_share:.0%} of PTRs silent, concurrency {concurrency}")
    print(f"{'step':<30} {'IPs':>7} {'wall s':>8} {'cpu s':>6} {'lookups/s':>10}  statuses")
    for name, n, wall, cpu, statuses in rows:
        print(f"{name:<30} {n:>7} {wall:>8.2f} {cpu:>6.2f} {n / wall:>10.0f}  {statuses}")
    if args.classify_days:
        with tempfile.TemporaryDirectory() as tmp:
            records, wall = bench_classify(Path(tmp), args.classify_days, args.classify_copies)
        print(f"{'classify.refresh (no DNS)':<30} {records:>7} {wall:>8.2f} {'':>6} {records / wall:>10.0f}  records/s")


if __name__ == "__main__":
    main()
