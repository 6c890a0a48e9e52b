"""Detection as one unit of work: read, score, store.

I/O lives here and only here. The database is opened read-only while
features are built (the slow part), so a dashboard or an ingest waiting on
the file is never blocked by detection, and opened for writing only for the
short upsert at the end.

Ids are stable: an anomaly's id is a hash of kind, domain, identity and first
day, and a re-run that finds the same episode again -- even when late
reports moved its first or last day -- reuses the stored id of the
overlapping episode, so nothing is duplicated and nothing is alerted twice.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from dmarclens.detect import contract as contract_mod
from dmarclens.detect import features as feat
from dmarclens.detect import rules
from dmarclens.detect.model import RANK, Anomaly
from dmarclens.store import db as dbmod

log = logging.getLogger(__name__)


def score(
    con: Any,
    since: date | None = None,
    until: date | None = None,
    *,
    params: feat.Params | None = None,
    contract: contract_mod.Contract | None = None,
    extra_authorized: list[tuple[str, str]] | None = None,
) -> list[Anomaly]:
    """Features → rules → evidence → Anomalies, on an open connection (read-only is enough)."""
    p = params or feat.Params()
    authorize_fn = None
    if contract is not None:
        # Contract services count as authorized from their first day: the owner said so.
        def authorize_fn(pairs: Any) -> list[tuple[str, str]]:
            return contract_mod.authorized_services(contract, pairs)

    f = feat.build(con, since, until, p, extra_authorized=extra_authorized, authorize_fn=authorize_fn,
                   contract_rows=contract is not None)
    if f.empty:
        return []
    found: list[rules.Finding] = []
    new_sources = rules.new_source_findings(f, p)
    found += new_sources
    found += rules.volume_findings(f, p)
    found += rules.range_findings(f, p)
    found += rules.identifier_findings(f, p, {(x.domain, x.identity["service"]) for x in new_sources})
    found += rules.spoof_findings(f, p)
    found += rules.regression_findings(f, p)
    found += rules.dormant_findings(f, p)
    found += rules.audience_findings(f, p)
    found += rules.lookalike_findings(f, p)
    found += contract_mod.violations(contract, f.contract_rows)
    found = rules.explain_best(found)
    found = contract_mod.adjust(found, contract)
    return _with_evidence(con, found)


def _with_evidence(con: Any, found: list[rules.Finding]) -> list[Anomaly]:
    import pandas as pd

    if not found:
        return []
    wanted = pd.DataFrame([
        {"fid": str(i), "domain": x.domain, "first_day": x.first_day, "last_day": x.last_day,
         **{k: x.match.get(k) for k in ("service", "ip_range", "env_from", "dkim_domain", "dkim_selector",
                                         "header_from", "org", "env_to")},
         "traffic": x.match.get("traffic", "any")}
        for i, x in enumerate(found)
    ])
    ev = feat.evidence(con, wanted)
    by_fid = {str(r["fid"]): r for r in ev.to_dict("records")}
    out: list[Anomaly] = []
    for i, x in enumerate(found):
        e = by_fid.get(str(i), {})
        ips = _list(e.get("ips"))
        n_ips = int(e.get("n_ips") or len(ips))
        identity = {k: v for k, v in x.identity.items() if v is not None}
        out.append(Anomaly(
            kind=x.kind, severity=x.severity, domain=x.domain, identity=identity,
            first_day=x.first_day, last_day=x.last_day, messages=int(x.messages), expected=float(x.expected),
            passed=int(x.passed), failed=int(x.failed), explanation=rules.explanation(x, n_ips),
            score=float(x.score), ips=ips, report_keys=_list(e.get("report_keys")),
            report_ids=_list(e.get("report_ids")), reporters=_list(e.get("reporters")),
            details={**_plain(x.details), "ip_count": n_ips},
        ))
    out.sort(key=lambda a: (-RANK[a.severity], a.first_day, a.domain, a.kind))
    return out


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    try:
        return [str(v) for v in list(value) if v is not None]
    except TypeError:
        return []


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy scalars and dates become plain values)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


# --------------------------------------------------------------------------- storing


def acked_services(con: Any) -> list[tuple[str, str]]:
    """Services whose new_source finding the owner acknowledged: authorized from then on."""
    rows = con.execute(
        """SELECT DISTINCT a.domain, json_extract_string(a.identity, '$.service')
           FROM anomalies a JOIN anomaly_acks k ON k.anomaly_id = a.anomaly_id
           WHERE a.kind = 'new_source'"""
    ).fetchall()
    return [(d, s) for d, s in rows if s]


def _stable_key(ident_key: str) -> str:
    """The identity key without the service name.

    Service names can change under a finding: ``dmarclens enrich`` resolves
    reverse DNS and may rename "Microsoft Corporation" (AS name) to the
    service its PTR names. The ASN, range and identifiers stay, so an episode
    is still recognised as the same one.
    """
    return "|".join(p for p in ident_key.split("|") if not p.startswith("service="))


def store(con: Any, found: list[Anomaly], run_id: str) -> list[Anomaly]:
    """Upsert anomalies, reusing ids of overlapping stored episodes; returns them with ids and status."""
    existing = con.execute(
        "SELECT anomaly_id, kind, domain, identity_key, first_day, last_day FROM anomalies"
    ).fetchall()
    index: dict[tuple[str, str, str], list[tuple[str, date, date]]] = {}
    loose: dict[tuple[str, str, str], list[tuple[str, date, date]]] = {}
    for aid, kind, domain, ikey, first, last in existing:
        index.setdefault((kind, domain, ikey), []).append((aid, first, last))
        if _stable_key(ikey):
            loose.setdefault((kind, domain, _stable_key(ikey)), []).append((aid, first, last))
    known_ids = {row[0] for row in existing}
    now = _now()
    out: list[Anomaly] = []
    seen: set[str] = set()

    def overlapping(cands: list[tuple[str, date, date]], a: Anomaly) -> list[tuple[str, date, date]]:
        return [c for c in cands
                if c[1] <= a.last_day + timedelta(days=1) and c[2] >= a.first_day - timedelta(days=1)]

    for a in found:
        cands = overlapping(index.get((a.kind, a.domain, a.identity_key), []), a)
        if not cands and _stable_key(a.identity_key):
            cands = overlapping(loose.get((a.kind, a.domain, _stable_key(a.identity_key)), []), a)
        if cands:
            a = replace(a, id=min(cands, key=lambda c: c[1])[0])
        if a.id in seen:
            continue  # two computed episodes fell onto one stored one; keep the first (most severe)
        seen.add(a.id)
        a.new = not cands and a.id not in known_ids
        out.append(a)
    if out:
        import pyarrow as pa

        table = pa.table({
            "anomaly_id": [a.id for a in out],
            "kind": [a.kind for a in out],
            "severity": [a.severity for a in out],
            "severity_rank": pa.array([a.severity_rank for a in out], type=pa.int8()),
            "score": [float(a.score) for a in out],
            "domain": [a.domain for a in out],
            "identity_key": [a.identity_key for a in out],
            "identity": [json.dumps(_plain(a.identity), sort_keys=True) for a in out],
            "first_day": pa.array([a.first_day for a in out], type=pa.date32()),
            "last_day": pa.array([a.last_day for a in out], type=pa.date32()),
            "messages": pa.array([int(a.messages) for a in out], type=pa.int64()),
            "expected": [float(a.expected) for a in out],
            "passed": pa.array([int(a.passed) for a in out], type=pa.int64()),
            "failed": pa.array([int(a.failed) for a in out], type=pa.int64()),
            "dmarc": [a.dmarc for a in out],
            "explanation": [a.explanation for a in out],
            "ips": [a.ips for a in out],
            "report_keys": [a.report_keys for a in out],
            "report_ids": [a.report_ids for a in out],
            "reporters": [a.reporters for a in out],
            "details": [json.dumps(_plain(a.details), sort_keys=True) for a in out],
            "repeat_rule": [a.repeat_rule for a in out],
        })
        con.register("_det_new", table)
        try:
            con.execute(
                """INSERT INTO anomalies BY NAME
                   SELECT * REPLACE (identity::JSON AS identity, details::JSON AS details),
                          ?::TIMESTAMPTZ AS first_detected_at, ?::TIMESTAMPTZ AS last_detected_at,
                          ? AS detect_run_id
                   FROM _det_new
                   ON CONFLICT (anomaly_id) DO UPDATE SET
                       severity = excluded.severity, severity_rank = excluded.severity_rank,
                       score = excluded.score, first_day = excluded.first_day, last_day = excluded.last_day,
                       messages = excluded.messages, expected = excluded.expected, passed = excluded.passed,
                       failed = excluded.failed, dmarc = excluded.dmarc, explanation = excluded.explanation,
                       ips = excluded.ips, report_keys = excluded.report_keys, report_ids = excluded.report_ids,
                       reporters = excluded.reporters, details = excluded.details, identity = excluded.identity,
                       identity_key = excluded.identity_key,
                       last_detected_at = excluded.last_detected_at, detect_run_id = excluded.detect_run_id""",
                [now, now, run_id],
            )
        finally:
            con.unregister("_det_new")
        status = dict(con.execute(
            "SELECT anomaly_id, status FROM v_anomalies WHERE anomaly_id IN (SELECT unnest(?))",
            [[a.id for a in out]],
        ).fetchall())
        for a in out:
            a.status = status.get(a.id, "open")
    return out


def _now() -> Any:
    from dmarclens.store.write import now_utc

    return now_utc()


def detect_and_store(
    db_path: str | Path,
    since: date | None = None,
    until: date | None = None,
    *,
    contract_path: str | Path | None = None,
    params: feat.Params | None = None,
    lock_timeout: float = 30.0,
) -> list[Anomaly]:
    """Run detection over the stored data and store the anomalies; return them (most severe first).

    ``contract_path`` names a senders.toml; without it ./senders.toml is used
    when present.
    """
    from dmarclens.core.version import __version__

    started = time.monotonic()
    run_id = uuid.uuid4().hex[:16]
    contract = contract_mod.load_contract(contract_path)
    # 1. bring the schema up to date and read the acknowledgements (short write open).
    with dbmod.open_db(db_path, lock_timeout=lock_timeout) as con:
        extra = acked_services(con)
        started_at = _now()
    # 2. the heavy part on a read-only connection.
    with dbmod.open_db(db_path, read_only=True, lock_timeout=lock_timeout) as con:
        data_last = con.execute("SELECT max(day) FROM records").fetchall()[0][0]
        found = score(con, since, until, params=params, contract=contract, extra_authorized=extra)
    # 3. the upsert, in one transaction.
    with dbmod.open_db(db_path, lock_timeout=lock_timeout) as con, dbmod.transaction(con):
        stored = store(con, found, run_id)
        con.execute(
            "INSERT INTO detect_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, started_at, _now(), since, until, data_last, len(stored),
             sum(1 for a in stored if a.new), time.monotonic() - started, __version__],
        )
    log.info("detect: %d anomalies (%d new) in %.1fs", len(stored), sum(a.new for a in stored),
             time.monotonic() - started)
    return stored


def load_anomalies(con: Any, *, since: date | None = None, until: date | None = None,
                   min_severity: str = "info", include_acknowledged: bool = True,
                   ids: list[str] | None = None) -> list[Anomaly]:
    """Stored anomalies (from v_anomalies) as Anomaly objects, most severe first."""
    clauses = ["severity_rank >= ?"]
    params: list[Any] = [RANK[min_severity]]
    if since:
        clauses.append("last_day >= ?")
        params.append(since)
    if until:
        clauses.append("first_day <= ?")
        params.append(until)
    if not include_acknowledged:
        clauses.append("status <> 'acknowledged'")
    if ids is not None:
        clauses.append("anomaly_id IN (SELECT unnest(?))")
        params.append(list(ids))
    rows = con.execute(
        f"""SELECT anomaly_id, kind, severity, domain, identity, first_day, last_day, messages, expected,
                   passed, failed, explanation, score, ips, report_keys, report_ids, reporters, details, status
            FROM v_anomalies WHERE {' AND '.join(clauses)}
            ORDER BY severity_rank DESC, first_day, domain, kind""",
        params,
    ).fetchall()
    out = []
    for r in rows:
        out.append(Anomaly(
            id=r[0], kind=r[1], severity=r[2], domain=r[3], identity=json.loads(r[4]) if r[4] else {},
            first_day=r[5], last_day=r[6], messages=int(r[7]), expected=float(r[8] or 0.0),
            passed=int(r[9] or 0), failed=int(r[10] or 0), explanation=r[11], score=float(r[12] or 0.0),
            ips=list(r[13] or []), report_keys=list(r[14] or []), report_ids=list(r[15] or []),
            reporters=list(r[16] or []), details=json.loads(r[17]) if r[17] else {}, status=r[18],
        ))
    return out


__all__ = ["detect_and_store", "load_anomalies", "score", "store"]
