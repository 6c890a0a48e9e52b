"""The analyst tests share one database: the scenario world, ingested once.

Tests open it read-only (as analysts do); a test that needs to write, lock or
ingest takes its own copy through ``world_db``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dmarclens.generator.xmlgen import render_report
from dmarclens.ingest.writer import ingest_paths
from dmarclens.store.db import open_db
from tests.analyst.scenario import IP_FACTS, report_specs


def write_reports(folder: Path) -> int:
    """Render every scenario report as an .xml file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = report_specs()
    for i, spec in enumerate(specs):
        (folder / f"{i:04d}-{spec.report_id}.xml").write_bytes(render_report(spec))
    return len(specs)


def set_ip_facts(db: Path) -> None:
    """Give the documentation IPs the service/country/ASN their story needs."""
    with open_db(db) as con:
        for ip, (service, service_type, asn, as_name, country) in IP_FACTS.items():
            con.execute(
                "UPDATE ip_info SET service_name = ?, service_type = ?, asn = ?, as_name = ?, country = ? "
                "WHERE ip = ?",
                [service, service_type, asn, as_name, country, ip],
            )


@pytest.fixture(scope="session")
def world_reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("world") / "reports"
    write_reports(folder)
    return folder


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory, world_reports: Path) -> Path:
    path = tmp_path_factory.mktemp("worlddb") / "world.duckdb"
    summary = ingest_paths([world_reports], path)
    assert summary.rejected == 0 and summary.stored == len(report_specs()), summary.to_json()
    set_ip_facts(path)
    return path


@pytest.fixture
def world_db(world_template: Path, tmp_path: Path) -> Path:
    """A private copy of the world that a test may write to or lock."""
    dest = tmp_path / "world.duckdb"
    shutil.copy(world_template, dest)
    return dest


@pytest.fixture(scope="session")
def world_con(world_template: Path):
    """A read-only connection to the shared world, through the public entry point."""
    import dmarclens

    con = dmarclens.connect(world_template)
    yield con
    con.close()
