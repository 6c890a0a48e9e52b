"""Fixtures shared by every test area.

Real parts only: DuckDB files under tmp_path, the real CLI in a subprocess,
real servers from tests/servers (Dovecot, DNS, SMTP, webhook, Chromium,
Streamlit). Test data comes from dmarclens' own report generator.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_reports"

if (REPO / "tests" / "servers" / "plugin.py").exists():
    pytest_plugins = ["tests.servers.plugin"]


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `dmarclens` CLI as a user would (a separate process)."""
    full_env = dict(os.environ)
    full_env.pop("DMARCLENS_DB", None)
    full_env.pop("DMARCLENS_CONFIG", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "dmarclens", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, input=input,
    )


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    assert SAMPLES.is_dir() and any(SAMPLES.iterdir()), "sample_reports/ is missing; run scripts/make_samples.py"
    return SAMPLES


@pytest.fixture(scope="session")
def sample_db_template(tmp_path_factory: pytest.TempPathFactory, samples_dir: Path) -> Path:
    """sample_reports/ ingested once per session through the library pipeline."""
    from dmarclens.ingest.writer import ingest_paths

    path = tmp_path_factory.mktemp("sampledb") / "samples.duckdb"
    summary = ingest_paths([samples_dir], path)
    assert summary.stored > 0 and summary.rejected == 0, summary.to_json()
    return path


@pytest.fixture
def sample_db(sample_db_template: Path, tmp_path: Path) -> Path:
    """A private copy of the sample database that a test may write to."""
    dest = tmp_path / "samples.duckdb"
    shutil.copy(sample_db_template, dest)
    return dest
