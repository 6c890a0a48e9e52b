"""`dmarclens query`: --list, --saved/--param, usage errors (exit 2) and exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dmarclens.query import saved
from tests.analyst.scenario import AS_OF, LOOKALIKE, M365_NEW, NEW_TENANT_FROM, day
from tests.conftest import run_cli


def test_list_names_every_saved_query_with_purpose_and_params() -> None:
    res = run_cli("query", "--list")
    assert res.returncode == 0, res.stderr
    for q in saved.list_queries():
        assert q.name in res.stdout and q.purpose in res.stdout
    assert "ip (required)" in res.stdout and "days=14" in res.stdout
    res = run_cli("query", "--list", "--format", "json")
    listed = json.loads(res.stdout)
    assert [e["name"] for e in listed] == [q.name for q in saved.list_queries()]
    assert {"name", "purpose", "params"} == set(listed[0])


def test_saved_query_with_params(world_template: Path) -> None:
    res = run_cli("query", "--saved", "new_passing_sources", "--param", "days=5", "--param", "domain=example.com",
                  "--db", str(world_template), "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(res.stdout.splitlines()))
    assert [(r["source_ip"], r["first_seen"], r["passed"]) for r in rows] == [
        (M365_NEW, day(NEW_TENANT_FROM).isoformat(), "100")
    ]
    res = run_cli("query", "--saved", "new_passing_sources", "--param", "days=4", "--db", str(world_template),
                  "--format", "csv")
    assert res.returncode == 0 and res.stdout.strip().count("\n") == 0  # header only: day 30 is 5 days back


@pytest.mark.parametrize(
    "args, message",
    [
        (["--saved", "new_passing_sources", "--param", "days=week"], "parameter days: expected a whole number"),
        (["--saved", "new_passing_sources", "--param", "as_of=31.03.2025"], "parameter as_of: expected a date"),
        (["--saved", "new_passing_sources", "--param", "dayz=3"],
         "parameter dayz: new_passing_sources has no such parameter (parameters: days, as_of, domain)"),
        (["--saved", "source_activity"], "parameter ip: source_activity needs it"),
        (["--saved", "source_activity", "--param", "ip"], "parameter 'ip': write it as NAME=VALUE"),
        (["--saved", "new_pasing_sources"], "did you mean new_passing_sources"),
        (["--param", "days=3", "SELECT 1"], "--param only goes with --saved"),
        (["--saved", "silent_domains", "SELECT 1"], "either SQL or --saved"),
        (["--saved", "silent_domains", "--format", "parquet"], "give --output FILE"),
        ([], "give a SQL statement"),
    ],
)
def test_usage_errors_exit_2_naming_the_problem(world_template: Path, args: list[str], message: str) -> None:
    res = run_cli("query", *args, "--db", str(world_template))
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert message in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_exports_read_back(world_template: Path, tmp_path: Path) -> None:
    base = ["query", "--saved", "source_activity", "--param", f"ip={LOOKALIKE}", "--db", str(world_template)]
    out_csv, out_json, out_pq = tmp_path / "a.csv", tmp_path / "a.json", tmp_path / "a.parquet"
    for fmt, out in (("csv", out_csv), ("json", out_json), ("parquet", out_pq)):
        res = run_cli(*base, "--format", fmt, "--output", str(out))
        assert res.returncode == 0 and res.stdout == "", res.stderr
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert [(r["day"], r["messages"]) for r in rows] == [(day(33).isoformat(), "7"), (AS_OF.isoformat(), "9")]
    data = json.loads(out_json.read_text())
    assert [(r["day"], r["messages"], r["envelope_froms"]) for r in data] == [
        (day(33).isoformat(), 7, ["examp1e.com"]), (AS_OF.isoformat(), 9, ["3xarnp1e.com", "examp1e.com"]),
    ]
    table = pq.read_table(out_pq)
    assert table.column("day").to_pylist() == [day(33), AS_OF]  # real dates and lists, not strings
    assert table.column("envelope_froms").to_pylist() == [["examp1e.com"], ["3xarnp1e.com", "examp1e.com"]]
    assert table.column("messages").to_pylist() == [7, 9]


def test_raw_sql_exports_and_output_folder_errors(world_template: Path, tmp_path: Path) -> None:
    out = tmp_path / "daily.parquet"
    res = run_cli("query", "SELECT domain, sum(messages) AS n FROM v_daily GROUP BY 1 ORDER BY 1",
                  "--db", str(world_template), "--format", "parquet", "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert pq.read_table(out).column("domain").to_pylist() == ["example.com", "example.net", "quiet.example"]
    res = run_cli("query", "--saved", "silent_domains", "--db", str(world_template),
                  "--output", str(tmp_path / "nope" / "x.csv"), "--format", "csv")
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_missing_database_exits_1(tmp_path: Path) -> None:
    res = run_cli("query", "--saved", "silent_domains", "--db", str(tmp_path / "none.duckdb"))
    assert res.returncode == 1 and "not found" in res.stderr
