"""Stored anomalies: stable ids, no duplicates on re-runs or late data, acknowledgements and repeats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from pathlib import Path

import duckdb

from dmarclens.detect.run import detect_and_store, load_anomalies
from dmarclens.ingest.writer import ingest_paths

from . import worlds
from .conftest import Detected


def _rows(db: Path) -> list[tuple[str, str, str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT anomaly_id, kind, domain, identity_key FROM anomalies ORDER BY 1").fetchall()


def test_rerun_updates_instead_of_duplicating(detected: Detected, world_copy: Path) -> None:
    before = _rows(world_copy)
    again = detect_and_store(world_copy)
    assert _rows(world_copy) == before
    assert sorted(a.id for a in again) == sorted(a.id for a in detected.anomalies)
    assert not any(a.new for a in again)
    with duckdb.connect(str(world_copy), read_only=True) as con:
        runs = con.execute("SELECT count(*), max(anomalies), min(new_anomalies) FROM detect_runs").fetchone()
    assert runs == (2, len(before), 0)


def test_late_reports_extend_episodes_without_new_ids(detected: Detected, tmp_path: Path) -> None:
    """Run detection as a daily cron would, mid-event, then again when the late reports are in."""
    deliveries, _ = worlds.build()
    db = tmp_path / "incremental.duckdb"
    cutoff = datetime.combine(worlds.day(34), time(12, 0), UTC)  # seed started day 33
    early, late = tmp_path / "early", tmp_path / "late"
    early.mkdir()
    late.mkdir()
    for d in deliveries:
        ((early if d.arrival <= cutoff else late) / d.name).write_bytes(d.data)
    ingest_paths([early], db)
    first = {(a.kind, a.domain): a for a in detect_and_store(db)}
    seed_early = first[("new_ip_range_in_authorized_provider", "seed.example")]
    assert seed_early.severity in ("high", "critical")
    assert seed_early.first_day == worlds.day(33)
    ingest_paths([late], db)
    second = detect_and_store(db)
    seed_late = next(a for a in second if a.kind == "new_ip_range_in_authorized_provider"
                     and a.domain == "seed.example")
    assert seed_late.id == seed_early.id and not seed_late.new
    assert seed_late.last_day > seed_early.last_day and seed_late.messages > seed_early.messages
    rows = _rows(db)
    assert len(rows) == len({r[0] for r in rows})
    assert len({(k, d, i) for _, k, d, i in rows}) == len(rows)  # one row per finding


def test_ack_suppresses_the_finding_and_its_repeats(detected: Detected, world_copy: Path, cli_db) -> None:  # type: ignore[no-untyped-def]
    seed = next(a for a in detected.anomalies if a.domain == "seed.example")
    r = cli_db("ack", seed.id[:8], "--note", "checked with the M365 admin")
    assert r.returncode == 0, r.stderr
    assert seed.id in r.stdout
    shown = json.loads(cli_db("detect", "--format", "json").stdout)
    assert seed.id not in {a["id"] for a in shown}
    every = json.loads(cli_db("detect", "--format", "json", "--include-acknowledged").stdout)
    assert {a["id"]: a["status"] for a in every}[seed.id] == "acknowledged"
    with duckdb.connect(str(world_copy)) as con:
        note = con.execute("SELECT ack_note, status FROM v_anomalies WHERE anomaly_id = ?", [seed.id]).fetchone()
        assert note == ("checked with the M365 admin", "acknowledged")
        # a later episode of the same finding is a repeat: suppressed for novelty kinds ...
        _clone(con, seed.id, "new0000000000001", days=20, severity=("critical", 4))
        # ... but a volume-type finding that comes back *worse* is not
        spike = next(a for a in detected.anomalies if a.kind == "volume_spike")
        con.execute("INSERT INTO anomaly_acks (anomaly_id, kind, domain, identity_key, severity_rank, acked_at) "
                    "SELECT anomaly_id, kind, domain, identity_key, 2, now() FROM anomalies WHERE anomaly_id = ?",
                    [spike.id])
        _clone(con, spike.id, "new0000000000002", days=20, severity=("critical", 4))
        _clone(con, spike.id, "new0000000000003", days=40, severity=("medium", 2))
        status = dict(con.execute("SELECT anomaly_id, status FROM v_anomalies WHERE anomaly_id LIKE 'new%'").fetchall())
    assert status == {"new0000000000001": "acknowledged", "new0000000000002": "open",
                      "new0000000000003": "acknowledged"}


def test_ack_of_unknown_or_ambiguous_id_is_a_usage_error(cli_db) -> None:  # type: ignore[no-untyped-def]
    r = cli_db("ack", "ffffffffffff")
    assert r.returncode == 2 and "no anomaly" in r.stderr
    r = cli_db("ack", "ab")
    assert r.returncode == 2


def test_ack_with_a_too_short_id_is_a_usage_error_before_the_database_is_opened(
        cli_db, world_copy: Path) -> None:  # type: ignore[no-untyped-def]
    holder = duckdb.connect(str(world_copy))  # another process's writer would lock the file the same way
    try:
        r = cli_db("ack", "abc", env={"DMARCLENS_LOCK_TIMEOUT": "1"})
    finally:
        holder.close()
    assert r.returncode == 2 and "at least 4 characters" in r.stderr, r.stderr


def test_ack_takes_an_id_prefix_as_the_cli_always_has(detected: Detected, cli_db) -> None:  # type: ignore[no-untyped-def]
    """A prefix is matched with LIKE (``_`` stands for any one character), as before the
    acknowledgement moved to the query layer."""
    ids = [a.id for a in detected.anomalies]
    k = next(k for k in range(3, 16) if len({i[:k] for i in ids}) == len(ids))  # the shortest unique prefix
    target = ids[0]
    r = cli_db("ack", target[:k] + "_", "--note", "prefix with a wildcard")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == ["acknowledged", f"{target}:"]


def test_acknowledged_new_source_becomes_authorized(detected: Detected, world_copy: Path) -> None:
    esp = next(a for a in detected.anomalies if a.kind == "new_source" and a.domain == "newesp.example")
    from dmarclens.query.anomalies import acknowledge
    from dmarclens.store.db import open_db

    with open_db(world_copy) as con:
        acknowledge(con, esp.id, note="onboarded by marketing")
    again = detect_and_store(world_copy)
    with duckdb.connect(str(world_copy), read_only=True) as con:
        loaded = load_anomalies(con, ids=[esp.id])
    assert loaded[0].status == "acknowledged"
    assert esp.id in {a.id for a in again}


def _clone(con: duckdb.DuckDBPyConnection, src: str, new_id: str, *, days: int, severity: tuple[str, int]) -> None:
    con.execute(
        """INSERT INTO anomalies SELECT * REPLACE (? AS anomaly_id, first_day + ?::INTEGER AS first_day,
                  last_day + ?::INTEGER AS last_day, ? AS severity, ?::TINYINT AS severity_rank)
           FROM anomalies WHERE anomaly_id = ?""",
        [new_id, days, days, severity[0], severity[1], src],
    )


def test_identity_baseline_for_the_dashboard(detected: Detected) -> None:
    from dmarclens.query.anomalies import identity_baseline

    a = next(x for x in detected.anomalies if x.domain == "seed.example")
    with duckdb.connect(str(detected.db), read_only=True) as con:
        df = identity_baseline(con, a.domain, {"service": "Microsoft"}, a.first_day, a.last_day)
    assert len(df) == (a.last_day - a.first_day).days + 1  # every day, silences included
    first = df.iloc[0]
    assert first["passed"] > 2 * first["baseline"] > 0  # the Saturday of the seed against usual Saturdays


def test_service_rename_by_enrichment_keeps_the_finding(detected: Detected, world_copy: Path) -> None:
    """Reverse DNS may rename a service under a finding; the episode keeps its id (ASN and range stay)."""
    seed = next(a for a in detected.anomalies if a.domain == "seed.example")
    with duckdb.connect(str(world_copy)) as con:
        con.execute("UPDATE ip_info SET service_name = 'Microsoft 365' WHERE service_name = 'Microsoft' "
                    "OR (service_name IS NULL AND as_name LIKE 'Microsoft%')")
    again = detect_and_store(world_copy)
    renamed = next(a for a in again if a.domain == "seed.example" and a.kind == seed.kind)
    assert renamed.identity["service"] == "Microsoft 365"
    assert renamed.id == seed.id and not renamed.new
    assert len(_rows(world_copy)) == len(detected.anomalies)
