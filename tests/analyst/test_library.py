"""The saved-query files, their headers and parameters, and docs/hunting.md."""

from __future__ import annotations

from datetime import UTC, date, datetime

import duckdb
import pytest

from dmarclens.query import saved
from dmarclens.query.saved import (
    Param,
    QueryDefinitionError,
    QueryParamError,
    UnknownQueryError,
    parse_param_args,
    parse_query,
)
from tests.conftest import REPO


def test_every_shipped_query_has_purpose_typed_params_and_uses_exactly_them() -> None:
    queries = saved.list_queries()
    assert len(queries) >= 12
    for q in queries:
        assert q.purpose and len(q.purpose) < 160, q.name
        assert q.notes, f"{q.name}: say why the query matters"
        assert saved.placeholders(q.sql) == {p.name for p in q.params}
        for p in q.params:
            assert p.type in saved.PARAM_TYPES
            if not p.required:
                p.default_value()  # every default converts


def test_queries_read_only_the_stable_views() -> None:
    for q in saved.list_queries():
        body = q.sql.lower()
        for table in ("from records", "join records", "from reports", "join reports", "from ip_info", "join ip_info"):
            assert table not in body, f"{q.name} reads a table ({table}); use the stable views"


def test_docs_hunting_md_is_generated_from_the_queries() -> None:
    current = (REPO / "docs" / "hunting.md").read_text(encoding="utf-8")
    assert current == saved.catalog_markdown(), "docs/hunting.md is stale: python -m dmarclens.query.saved docs/hunting.md"
    for q in saved.list_queries():
        assert f"## {q.name}" in current


def test_header_parsing() -> None:
    q = parse_query(
        "demo",
        "-- purpose: Find things.\n"
        "-- param: days int = 14 | window\n"
        "-- param: ip text | the IP\n"
        "-- Why it matters.\n"
        "SELECT $days, $ip, '$not_a_param' -- $nor_this\n",
    )
    assert q.purpose == "Find things." and q.notes == "Why it matters."
    assert q.params == (Param("days", "int", "14", "window"), Param("ip", "text", None, "the IP"))
    assert q.params[1].required and not q.params[0].required


@pytest.mark.parametrize(
    "text, problem",
    [
        ("SELECT 1", "purpose"),
        ("-- purpose: x\n-- param: days integer = 1 | bad type\nSELECT $days", "bad param line"),
        ("-- purpose: x\n-- param: days int = 1 | w\nSELECT 1", "SQL uses"),
        ("-- purpose: x\nSELECT $undeclared", "SQL uses"),
        ("-- purpose: x\n-- param: db text = a | clashes with load_dataframe(db=)\nSELECT $db", "reserved"),
    ],
)
def test_malformed_headers_are_refused(text: str, problem: str) -> None:
    with pytest.raises(QueryDefinitionError, match=problem):
        parse_query("demo", text)


def test_param_conversion_and_errors_name_the_param() -> None:
    days, as_of, flag, ratio = (Param("days", "int", "14", ""), Param("as_of", "date", "NULL", ""),
                                Param("flag", "bool", "false", ""), Param("ratio", "float", "1.5", ""))
    assert days.convert("7") == 7 and days.convert(7) == 7
    assert as_of.convert("2025-03-01") == date(2025, 3, 1)
    assert as_of.convert("today") == datetime.now(UTC).date()
    assert as_of.default_value() is None
    assert flag.convert("yes") is True and flag.default_value() is False
    assert ratio.convert("2") == 2.0
    for param, bad in ((days, "seven"), (days, True), (as_of, "31/03/2025"), (flag, "maybe"), (ratio, "x")):
        with pytest.raises(QueryParamError, match=f"parameter {param.name}: expected"):
            param.convert(bad)


def test_bind_fills_defaults_and_refuses_unknown_or_missing() -> None:
    q = saved.get_query("source_activity")
    assert q.bind({"ip": "192.0.2.1"}) == {"ip": "192.0.2.1", "days": 30, "as_of": None}
    with pytest.raises(QueryParamError, match="parameter ip: source_activity needs it"):
        q.bind({})
    with pytest.raises(QueryParamError, match="parameter dayz: source_activity has no such parameter"):
        q.bind({"ip": "192.0.2.1", "dayz": "3"})
    with pytest.raises(UnknownQueryError, match="did you mean source_activity"):
        saved.get_query("source_activty")


def test_parse_param_args() -> None:
    assert parse_param_args(["days=7", "domain=a=b.example", "x="]) == {"days": "7", "domain": "a=b.example", "x": ""}
    with pytest.raises(QueryParamError, match="NAME=VALUE"):
        parse_param_args(["days"])
    with pytest.raises(QueryParamError, match="parameter days: given twice"):
        parse_param_args(["days=1", "days=2"])


def test_parameter_values_are_bound_not_pasted(world_con: duckdb.DuckDBPyConnection) -> None:
    """A hostile value is just a domain that matches nothing."""
    hostile = "example.com' OR '1'='1"
    assert saved.run_saved(world_con, "new_passing_sources", {"domain": hostile}).fetchall() == []
    assert saved.run_saved(world_con, "source_activity", {"ip": "x'; DROP TABLE records; --"}).fetchall() == []
    assert world_con.execute("SELECT count(*) FROM records").fetchone()[0] > 0
