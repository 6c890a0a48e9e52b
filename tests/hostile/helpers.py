"""Running dmarclens in a child process and reading its peak memory.

Why a wrapper process: ``getrusage(RUSAGE_CHILDREN)`` in the pytest process
reports the largest child it ever waited for (Dovecot helpers, other tests'
CLIs); a fresh wrapper whose only child is the command under test reports
exactly that command's peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import duckdb

_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[2:])\n"
    "kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "open(sys.argv[1], 'w').write(json.dumps({'rc': p.returncode, 'kb': kb}))\n"
)

RSS_LIMIT_MB = 600
"""Generous bound on one ingest/fetch process under every bomb (it idles near 200 MB)."""


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_mb: float


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without any DMARCLENS_* setting of the caller, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMARCLENS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_measured(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> Measured:
    """Run ``python -m dmarclens ARGS`` and return its output and peak RSS in MB."""
    out = cwd / f".rss-{os.getpid()}-{len(args)}.json"
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(out), sys.executable, "-m", "dmarclens", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(out.read_text())
    out.unlink()
    return Measured(info["rc"], proc.stdout, proc.stderr, info["kb"] / 1024)


def rows(db: Path, sql: str, params: list[object] | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def all_strings(db: Path) -> list[tuple[str, str, str]]:
    """(table, column, value) for every string stored anywhere in the database, nested ones included."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        cols = con.execute(
            """SELECT table_name, column_name FROM duckdb_columns()
               WHERE schema_name = 'main' AND NOT internal
                 AND table_name IN (SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main')
                 AND (data_type = 'VARCHAR' OR data_type LIKE '%VARCHAR%')"""
        ).fetchall()
        out: list[tuple[str, str, str]] = []
        for table, column in cols:
            for (value,) in con.execute(f'SELECT DISTINCT CAST("{column}" AS VARCHAR) FROM "{table}" '
                                        f'WHERE "{column}" IS NOT NULL').fetchall():
                out.append((table, column, value))
        return out
    finally:
        con.close()


def unsafe_chars(text: str) -> list[str]:
    """Characters that would corrupt a terminal, a log line or how a name displays."""
    invisible = set("\u200b\u200c\u200d\u200e\u200f\u2066\u2067\u2068\u2069\ufeff\u202a\u202b\u202c\u202d\u202e")
    return [repr(ch) for ch in text if unicodedata.category(ch) == "Cc" or ch in invisible]
