"""Detector findings for the Anomalies page, the CLI and analysts: lists, one
finding with its evidence, an identity's days against its baseline, and the
one place an anomaly is acknowledged."""
from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

from dmarclens.core.errors import ConfigError
from dmarclens.detect.model import RANK
from dmarclens.query.filters import Filters, frame, pd_date
from dmarclens.store.db import transaction
from dmarclens.store.sql import SERVICE_EXPR, columns_of, has_table, range_expr
from dmarclens.store.write import now_utc

ANOMALY_RELATIONS = ("v_anomalies", "anomalies")


SEVERITY_RANK = {name: rank + 1 for name, rank in RANK.items()}  # 0 is left for an unknown severity


def anomaly_relation(con: duckdb.DuckDBPyConnection) -> str | None:
    for name in ANOMALY_RELATIONS:
        if has_table(con, name):
            return name
    return None


def _status_col(cols: set[str]) -> str | None:
    return next((c for c in ("status", "state") if c in cols), None)


def _id_col(cols: set[str]) -> str:
    return next((c for c in ("anomaly_id", "id") if c in cols), "id")


def anomalies(con: duckdb.DuckDBPyConnection, f: Filters, status: str | None = "open") -> pd.DataFrame | None:
    """Detector findings, most severe first (None when detection has never run on this file)."""
    name = anomaly_relation(con)
    if name is None:
        return None
    cols = columns_of(con, name)
    clauses: list[str] = []
    params: list[Any] = []
    if f.domains and "domain" in cols:
        clauses.append("domain IN (SELECT unnest(?))")
        params.append(list(f.domains))
    if "last_day" in cols and f.start:
        clauses.append("last_day >= ?")
        params.append(f.start)
    if "first_day" in cols and f.end:
        clauses.append("first_day <= ?")
        params.append(f.end)
    scol = _status_col(cols)
    if status and scol:
        if status == "open":
            clauses.append(f"coalesce({scol}, 'open') IN ('open', 'new')")
        elif status == "all":
            pass
        else:
            clauses.append(f"{scol} = ?")
            params.append(status)
    where = " AND ".join(clauses) or "TRUE"
    rank = "CASE lower(severity) " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in SEVERITY_RANK.items()) + " ELSE 0 END"
    if "severity_rank" in cols:
        rank = "severity_rank"
    order = [f"{rank} DESC"] if "severity" in cols else []
    order += [c + " DESC" for c in ("last_day", "messages") if c in cols]
    return frame(con, f"SELECT * FROM {name} WHERE {where} ORDER BY {', '.join(order) or '1'} LIMIT 1000", params)


def open_anomaly_counts(con: duckdb.DuckDBPyConnection, f: Filters) -> dict[str, int] | None:
    """Open anomalies per domain (None when detection has not run)."""
    df = anomalies(con, f, status="open")
    if df is None:
        return None
    if df.empty or "domain" not in df.columns:
        return {}
    return {str(k): int(v) for k, v in df.groupby("domain").size().items()}


_IDENTITY_FILTERS = {
    "service": f"{SERVICE_EXPR} = ?",
    "asn": "i.asn = TRY_CAST(? AS INTEGER)",
    "as_name": "i.as_name = ?",
    "base_domain": "i.base_domain = ?",
    "envelope_from": "r.envelope_from = ?",
    "header_from": "r.header_from = ?",
    "dkim_domain": "list_contains(list_transform(r.dkim, lambda x: x.domain), ?)",
    "dkim_selector": "list_contains(list_transform(r.dkim, lambda x: x.selector), ?)",
    "ip_range": f"{range_expr('r.source_ip')} = ?",
    "network": f"{range_expr('r.source_ip')} = ?",
    "reporter": "p.org_name = ?",
    "envelope_to": "r.envelope_to = ?",
}


def identity_series(
    con: duckdb.DuckDBPyConnection,
    domain: str,
    identity: dict[str, Any],
    start: date,
    end: date,
    ips: list[str] | None = None,
) -> pd.DataFrame:
    """Daily messages (passed/failed) of the mail matching one anomaly's identity.

    The identity is the layer the detector says explains the finding (service,
    envelope-from, DKIM selector ...); unknown keys are ignored and, when no
    key is usable, the anomaly's IPs stand in for it.
    """
    clauses = ["p.domain = ?", "r.day BETWEEN ? AND ?"]
    params: list[Any] = [domain, start, end]
    used = 0
    for key, value in (identity or {}).items():
        sql = _IDENTITY_FILTERS.get(key)
        if sql is None or value in (None, "", []):
            continue
        clauses.append(sql)
        params.append(str(value))
        used += 1
    if not used and ips:
        clauses.append("r.source_ip IN (SELECT unnest(?))")
        params.append(list(ips))
    return frame(
        con,
        f"""SELECT r.day, sum(r.count)::BIGINT AS messages,
                   coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass)::BIGINT, 0) AS passed,
                   coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass)::BIGINT, 0) AS failed
            FROM records r JOIN reports p USING (report_key) LEFT JOIN ip_info i ON i.ip = r.source_ip
            WHERE {' AND '.join(clauses)} GROUP BY r.day ORDER BY r.day""",
        params,
    )


def anomaly_by_id(con: duckdb.DuckDBPyConnection, anomaly_id: str) -> dict[str, Any] | None:
    """One anomaly with its status (from v_anomalies), or None."""
    name = anomaly_relation(con)
    if name is None:
        return None
    cur = con.execute(f"SELECT * FROM {name} WHERE {_id_col(columns_of(con, name))} = ?", [anomaly_id])
    row = cur.fetchone()
    return dict(zip([d[0] for d in cur.description or []], row, strict=False)) if row else None


def identity_baseline(
    con: duckdb.DuckDBPyConnection,
    domain: str,
    identity: dict[str, Any],
    start: date,
    end: date,
    ips: list[str] | None = None,
) -> pd.DataFrame:
    """Daily DMARC-passing and failing messages of one identity, with the baseline it is judged by.

    ``baseline`` is the median of the same weekday over the previous eight
    weeks (the shape dmarclens detect expects; detect itself keeps it per
    reporter and sums the reporters present each day, so its number for a
    day with a missing reporter is lower). Days without mail are filled with
    0 so a chart shows silences. For the anomaly page: "what was normal, and
    what happened".
    """
    series = identity_series(con, domain, identity, start - timedelta(days=56), end, ips)
    if series.empty:
        return series.assign(baseline=[])
    first = min(pd_date(x) for x in series["day"])
    con.register("_identity_series", series)
    try:
        return frame(
            con,
            """WITH days AS (SELECT unnest(generate_series(?::DATE, ?::DATE, INTERVAL 1 DAY))::DATE AS day),
                    s AS (SELECT d.day, coalesce(x.passed, 0) AS passed, coalesce(x.failed, 0) AS failed,
                                 coalesce(x.messages, 0) AS messages
                          FROM days d LEFT JOIN _identity_series x ON x.day::DATE = d.day),
                    b AS (SELECT *, median(passed) OVER (PARTITION BY dayofweek(day) ORDER BY day
                                                         ROWS BETWEEN 8 PRECEDING AND 1 PRECEDING) AS baseline
                          FROM s)
               SELECT day, messages, passed, failed, baseline FROM b WHERE day >= ? ORDER BY day""",
            [first, end, start],
        )
    finally:
        con.unregister("_identity_series")


def id_prefix(anomaly_id: str) -> str:
    """The id as ``acknowledge`` matches it; a ``ConfigError`` (a usage error) when it is
    too short to be meant for one anomaly. Checked before the database is opened."""
    key = anomaly_id.strip().lower()
    if len(key) < 4:
        raise ConfigError("give at least 4 characters of the anomaly id")
    return key


def acknowledge(con: duckdb.DuckDBPyConnection, anomaly_id: str, *, note: str | None = None,
                by: str | None = None) -> str:
    """Acknowledge one anomaly, in one short transaction; return its full id.

    The one write behind ``dmarclens ack`` and the dashboard's Acknowledge
    button. A unique prefix of the id (4 characters or more) is enough. The
    acknowledgement keeps the kind, domain, identity and severity so repeats
    of the same finding are suppressed (see v_anomalies). ``by`` defaults to
    ``user@host``. Raises ``ConfigError`` when no anomaly or several match.
    """
    key = id_prefix(anomaly_id)
    with transaction(con):
        rows = con.execute(
            "SELECT anomaly_id, kind, domain, identity_key, severity_rank FROM anomalies WHERE anomaly_id LIKE ?",
            [key + "%"],
        ).fetchall()
        if not rows:
            raise ConfigError(f"no anomaly with id {anomaly_id!r} (see dmarclens detect)")
        if len(rows) > 1:
            raise ConfigError(f"id {anomaly_id!r} is ambiguous: {', '.join(r[0] for r in rows[:5])}")
        aid, kind, domain, ikey, rank = rows[0]
        con.execute(
            "INSERT INTO anomaly_acks (anomaly_id, kind, domain, identity_key, severity_rank, acked_at, acked_by, note) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [aid, kind, domain, ikey, rank, now_utc(), by or whoami(), note],
        )
    return str(aid)


def whoami() -> str:
    """``user@host`` of this process: who acknowledged, when nobody says."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
