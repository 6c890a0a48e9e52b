"""`domains` from the file named by --config decides which reports count."""

from __future__ import annotations

from pathlib import Path

from dmarclens.generator.xmlgen import render_report
from dmarclens.query.filters import Filters
from dmarclens.query.reports import report_list
from dmarclens.query.traffic import domains
from dmarclens.store.db import connect
from tests.conftest import run_cli
from tests.spine.conftest import make_spec


def test_config_domains_hide_reports_about_other_domains(tmp_path: Path) -> None:
    (tmp_path / "mine.xml").write_bytes(render_report(make_spec(report_id="mine", domain="example.com")))
    (tmp_path / "forged.xml").write_bytes(render_report(make_spec(report_id="forged", domain="victim.example")))
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text('domains = ["example.com"]\n')
    db = tmp_path / "d.duckdb"
    res = run_cli("ingest", str(tmp_path / "mine.xml"), str(tmp_path / "forged.xml"), "--db", str(db),
                  "--config", str(cfg), cwd=tmp_path.parent)
    assert res.returncode == 0, res.stderr
    con = connect(db, read_only=True)
    try:
        assert domains(con) == ["example.com"]
        assert con.execute("SELECT DISTINCT domain FROM v_daily").fetchall() == [("example.com",)]
        assert con.execute("SELECT count(*) FROM reports").fetchone() == (2,)  # kept, for inspection
        assert len(report_list(con, Filters())) == 1
    finally:
        con.close()
