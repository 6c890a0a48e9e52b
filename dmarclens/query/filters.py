"""The filters every dashboard page and query function shares, and the result helpers."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pandas as pd


@dataclass(frozen=True)
class Filters:
    """The filters every dashboard page shares (and keeps in the URL)."""

    domains: tuple[str, ...] = ()
    start: date | None = None
    end: date | None = None

    def where(self, day_col: str = "day", domain_col: str = "domain") -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.domains:
            clauses.append(f"{domain_col} IN (SELECT unnest(?))")
            params.append(list(self.domains))
        if self.start:
            clauses.append(f"{day_col} >= ?")
            params.append(self.start)
        if self.end:
            clauses.append(f"{day_col} <= ?")
            params.append(self.end)
        return (" AND ".join(clauses) or "TRUE"), params


def frame(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


def pd_date(value: Any) -> date:
    """A DATE value from DuckDB or pandas as a plain date."""
    return value.date() if hasattr(value, "date") and callable(value.date) else value
