"""Fixtures for the detection tests: the generated world, ingested once per session.

The world (``worlds.py``) is rendered by dmarclens' own generator, written
as report files the way a mailbox delivers them (zip, gzip, a forwarded
.eml, duplicates, a re-send under a new id, a late batch) and ingested
through the real pipeline into a DuckDB file under a temp dir. Detection
runs once on it; tests that write (ack, alert) work on a copy.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dmarclens.detect.model import Anomaly

from . import worlds


@dataclass
class Detected:
    db: Path  # the database after ingest and one detect run (do not write to it)
    inbox: Path
    anomalies: list[Anomaly]
    cases: list[worlds.Case]

    def of(self, domain: str, kind: str | None = None) -> list[Anomaly]:
        return [a for a in self.anomalies if a.domain == domain and (kind is None or a.kind == kind)]

    def json(self) -> list[dict[str, Any]]:
        return [a.to_json() for a in self.anomalies]


@pytest.fixture(scope="session")
def detected(tmp_path_factory: pytest.TempPathFactory) -> Detected:
    from dmarclens.detect.run import detect_and_store
    from dmarclens.ingest.writer import ingest_paths

    base = tmp_path_factory.mktemp("detect-world")
    inbox = base / "inbox"
    inbox.mkdir()
    deliveries, cases = worlds.build()
    for d in deliveries:
        (inbox / d.name).write_bytes(d.data)
    db = base / "world.duckdb"
    summary = ingest_paths([inbox], db)
    assert summary.rejected == 0, summary.to_json()
    assert summary.duplicates >= 4  # the duplicate deliveries were recognised at ingest
    anomalies = detect_and_store(db)
    return Detected(db, inbox, anomalies, cases)


@pytest.fixture
def world_copy(detected: Detected, tmp_path: Path) -> Path:
    """A private copy of the detected world's database that a test may write to."""
    dest = tmp_path / "world.duckdb"
    shutil.copy(detected.db, dest)
    return dest


@pytest.fixture
def cli_db(world_copy: Path) -> Callable[..., Any]:
    """Run the real CLI against the private copy: cli_db("detect", "--format", "json")."""
    from tests.conftest import run_cli

    def run(*args: str, **kw: Any) -> Any:
        return run_cli(*args, "--db", str(world_copy), **kw)

    return run
