"""`dmarclens ingest` SIGKILLed at seeded random points of a 500-report run, re-run after
each kill (as cron would), must end with exactly a clean run's database: every
report once, no record doubled, no rollup row left from a rolled-back batch."""

from __future__ import annotations

from pathlib import Path

from dmarclens.generator import many_small_reports
from tests.faults.harness import KillLog, facts, rng, run_clean, run_with_kill
from tests.hostile.helpers import clean_env

SEED = 20261127
KILLS = 20
ROUNDS = 1
REPORTS = 500


def test_ingest_killed_at_random_points_ends_exactly_like_a_clean_run(tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    for name, data in many_small_reports(REPORTS, seed=8):
        (folder / name).write_bytes(data)
    (folder / "junk.txt").write_bytes(b"not a report")  # a rejected input rides along
    env = clean_env({"DMARCLENS_BATCH_ITEMS": "100"})  # five commits per run: kills land between and inside them

    clean_db = tmp_path / "clean.duckdb"
    rc, seconds, err = run_clean(["ingest", str(folder), "--db", str(clean_db)], cwd=tmp_path, env=env)
    assert rc == 3, err  # the junk file is rejected
    expected = facts(clean_db)
    assert len(expected["reports"]) == REPORTS  # type: ignore[arg-type]

    log = KillLog()
    r = rng(SEED)
    for round_ in range(ROUNDS):  # each round: a fresh database, KILLS / ROUNDS kills, then one run to the end
        db = tmp_path / f"faulted-{round_}.duckdb"
        target = len(log.kills) + KILLS // ROUNDS
        while len(log.kills) < target:
            code = run_with_kill(["ingest", str(folder), "--db", str(db)], cwd=tmp_path, env=env,
                                 delay=r.uniform(0.4, seconds * 0.9), log=log)
            assert code in (None, 3)
        rc, _, err = run_clean(["ingest", str(folder), "--db", str(db)], cwd=tmp_path, env=env)
        assert rc == 3 and "Traceback" not in err, err
        assert facts(db) == expected, f"round {round_}"
    assert len(log.kills) >= KILLS
    print(f"\ningest: {len(log.kills)} SIGKILLs at {sorted(log.kills)} s ({log.completed_runs} runs finished "
          f"before their kill); clean run {seconds:.1f} s")
