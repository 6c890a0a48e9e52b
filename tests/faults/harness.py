"""Kill-and-rerun harness for the exactly-once tests.

A run of `dmarclens ingest` or `dmarclens fetch` is started, SIGKILLed after
a seeded random delay, and started again, the way cron would after a crash
(OOM killer, reboot, a stuck run killed by systemd). The database and the
mailbox are whatever the dead process left. In the end the totals must equal
a clean run's: the tests compare the two databases fact by fact.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb


@dataclass
class KillLog:
    """What the harness did, for assertions and for docs/reliability.md."""

    kills: list[float] = field(default_factory=list)  # seconds after start at which each SIGKILL landed
    completed_runs: int = 0  # runs that finished before their kill time
    other_faults: list[str] = field(default_factory=list)


def start(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a run in its own process group, so a kill can also reach anything it forked."""
    return subprocess.Popen([sys.executable, "-m", "dmarclens", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the run (and any child it left), then reap it; fail loudly rather than hang."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        listing = subprocess.run(["ps", "-eo", "pid,ppid,pgid,stat,cmd"], capture_output=True, text=True).stdout
        raise AssertionError(f"pid {proc.pid} survived SIGKILL for 30 s:\n{listing}") from None


def run_with_kill(args: list[str], *, cwd: Path, env: dict[str, str], delay: float, log: KillLog) -> int | None:
    """Run once; SIGKILL after ``delay`` seconds unless it finished. Returns its exit code, None when killed."""
    proc = start(args, cwd=cwd, env=env)
    started = time.monotonic()
    try:
        _out, err = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        kill(proc)
        log.kills.append(round(time.monotonic() - started, 2))
        return None
    assert b"Traceback" not in err, err.decode(errors="replace")[-3000:]
    log.completed_runs += 1
    return proc.returncode


def run_clean(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 180) -> tuple[int, float, str]:
    """One uninterrupted run: exit code, seconds, stderr."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dmarclens", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, time.monotonic() - t0, proc.stderr


def rng(seed: int) -> random.Random:
    return random.Random(seed)


def facts(db: Path) -> dict[str, object]:
    """Everything that must be identical between a clean and a faulted run's database."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        q: Callable[[str], list[tuple]] = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        return {
            "reports": sorted(q("SELECT report_key, message_count, record_count FROM reports")),
            "records": q("SELECT count(*), sum(count) FROM records"),
            "records_per_report": sorted(q("SELECT report_key, count(*), sum(count) FROM records GROUP BY 1")),
            "stored_once": q("SELECT count(*) = count(DISTINCT report_key) FROM ingest_items WHERE outcome = 'stored'"),
            "stored_items": q("SELECT count(*) FROM ingest_items WHERE outcome = 'stored'"),
            "raw": q("SELECT count(*) FROM report_raw"),
            "rollup": q("SELECT sum(messages) FROM rollup_source_daily"),
        }
    finally:
        con.close()
