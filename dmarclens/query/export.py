"""Export ``v_records`` as a Hive-partitioned Parquet lake (``day=…/domain=…``).

Why: one DuckDB file serves one organisation well, but an MSP with thousands
of domains or a mailbox provider outgrows one machine. Parquet partitioned by
day and policy domain is what Spark, Trino, Athena, BigQuery and DuckDB all
read directly, so the lake is the hand-off point (``docs/scale.md``).

The export is incremental and idempotent. For every (day, domain) in range it
computes a fingerprint of the rows ``v_records`` would export (row count plus
a sum of row hashes, so later enrichment or a late report changes it) and
compares it with the manifest kept in the lake (``_dmarclens_export.json``).
Only partitions whose fingerprint changed are written: into a staging folder
first, then swapped in by rename, so a reader never sees a half-written
partition and a killed export leaves the previous files in place. Partitions
whose rows left the database are removed. Running it twice changes nothing.

The database is opened read-only: an export never blocks ingest for longer
than DuckDB's own lock handover.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from dmarclens.core.errors import StoreError
from dmarclens.store import db as dbmod

log = logging.getLogger(__name__)

MANIFEST = "_dmarclens_export.json"
"""State file in the lake root. The leading underscore makes Spark, Hive and
Trino skip it as a data file."""

MANIFEST_VERSION = 1


@dataclass
class ExportResult:
    """What one export run did; ``dmarclens export parquet --json`` prints it."""

    out_dir: str
    written: int = 0  # partitions (re)written
    unchanged: int = 0  # partitions already current
    removed: int = 0  # partitions whose rows are gone from the database
    rows: int = 0  # rows written
    partitions: list[str] = field(default_factory=list)  # relative paths written

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def export_parquet(
    db_path: str | Path,
    out_dir: str | Path,
    *,
    since: date | None = None,
    until: date | None = None,
    lock_timeout: float = 30.0,
) -> ExportResult:
    """Bring the Parquet lake in ``out_dir`` up to date with ``v_records``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(out)
    manifest = _load_manifest(out)
    result = ExportResult(out_dir=str(out))
    staging = out / f"_staging-{uuid.uuid4().hex[:12]}"
    with dbmod.open_db(db_path, read_only=True, lock_timeout=lock_timeout) as con:
        current = _fingerprints(con, since, until)
        changed = [
            key for key, fp in current.items()
            if manifest.get(key, {}).get("fingerprint") != fp["fingerprint"]
            or not (out / manifest[key]["path"]).is_dir()
        ]
        result.unchanged = len(current) - len(changed)
        if changed:
            result.rows = _write_staging(con, staging, changed)
    try:
        staged = _partition_dirs(staging) if changed else {}
        for key in sorted(changed):
            rel = _move_partition(staging, staged.get(key), out, key)
            manifest[key] = {**current[key], "path": rel, "exported_at": _now()}
            result.partitions.append(rel)
            result.written += 1
        for key in sorted(set(manifest) - set(current)):
            if _in_range(key, since, until):
                _remove_partition(out, manifest.pop(key)["path"])
                result.removed += 1
        _save_manifest(out, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("export: %d partitions written (%d rows), %d unchanged, %d removed",
             result.written, result.rows, result.unchanged, result.removed)
    return result


def lake_glob(out_dir: str | Path) -> str:
    """The file pattern readers should use (it skips staging and trash folders)."""
    return str(Path(out_dir) / "day=*" / "domain=*" / "*.parquet")


# --------------------------------------------------------------------------- steps


def _key(day: date, domain: str) -> str:
    return f"{day.isoformat()}|{domain}"


def _in_range(key: str, since: date | None, until: date | None) -> bool:
    day = date.fromisoformat(key.split("|", 1)[0])
    return (since is None or day >= since) and (until is None or day <= until)


def _where(since: date | None, until: date | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if since is not None:
        clauses.append("day >= ?")
        params.append(since)
    if until is not None:
        clauses.append("day <= ?")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _fingerprints(con: Any, since: date | None, until: date | None) -> dict[str, dict[str, Any]]:
    """(day, domain) → rows and a content fingerprint of its v_records rows.

    The sum of 64-bit row hashes (as HUGEINT, so nothing wraps and equal rows
    do not cancel out) is order-independent: the same rows always give the
    same value, and any changed column of any row changes it.
    """
    where, params = _where(since, until)
    rows = con.execute(
        "SELECT day, domain, count(*), sum(hash(v)::HUGEINT)::VARCHAR FROM v_records v"
        f"{where} GROUP BY day, domain",
        params,
    ).fetchall()
    return {_key(d, dom): {"day": d.isoformat(), "domain": dom, "rows": n, "fingerprint": fp}
            for d, dom, n, fp in rows}


def _write_staging(con: Any, staging: Path, keys: list[str]) -> int:
    """Write the changed partitions below ``staging`` in one pass over v_records."""
    import pyarrow as pa

    days = [date.fromisoformat(k.split("|", 1)[0]) for k in keys]
    domains = [k.split("|", 1)[1] for k in keys]
    con.register("_dl_export_keys", pa.table({"day": pa.array(days, pa.date32()), "domain": domains}))
    try:
        n = con.execute(
            "SELECT count(*) FROM v_records v SEMI JOIN _dl_export_keys k USING (day, domain)"
        ).fetchone()[0]
        con.execute(
            "COPY (SELECT v.* FROM v_records v SEMI JOIN _dl_export_keys k USING (day, domain) "
            "ORDER BY day, domain, report_key, source_ip, interval_begin) "
            f"TO '{_sql_path(staging)}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (day, domain), "
            "FILENAME_PATTERN 'part-{uuid}', ROW_GROUP_SIZE 122880)"
        )
    finally:
        con.unregister("_dl_export_keys")
    return int(n)


def _partition_dirs(root: Path) -> dict[str, Path]:
    """``day=…/domain=…`` folders below ``root`` by manifest key (names decoded)."""
    from urllib.parse import unquote

    out: dict[str, Path] = {}
    for day_dir in root.glob("day=*"):
        day = date.fromisoformat(unquote(day_dir.name.split("=", 1)[1]))
        for dom_dir in day_dir.glob("domain=*"):
            out[_key(day, unquote(dom_dir.name.split("=", 1)[1]))] = dom_dir
    return out


def _move_partition(staging: Path, found: Path | None, out: Path, key: str) -> str:
    """Swap one freshly written partition into the lake; return its relative path."""
    if found is None:
        raise StoreError(f"export: partition {key} was not written")
    rel = found.relative_to(staging)
    target = out / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    trash = None
    if target.exists():
        trash = out / f"_trash-{uuid.uuid4().hex[:12]}"
        os.replace(target, trash)
    os.replace(found, target)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return rel.as_posix()


def _remove_partition(out: Path, rel: str) -> None:
    target = out / rel
    shutil.rmtree(target, ignore_errors=True)
    parent = target.parent
    if parent != out and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def _sweep_leftovers(out: Path) -> None:
    """Remove staging/trash folders a killed export left behind."""
    for leftover in list(out.glob("_staging-*")) + list(out.glob("_trash-*")):
        shutil.rmtree(leftover, ignore_errors=True)


def _load_manifest(out: Path) -> dict[str, dict[str, Any]]:
    path = out / MANIFEST
    if not path.exists():
        if any(out.glob("day=*")):
            log.warning("export: %s has partitions but no %s; rewriting what the database holds", out, MANIFEST)
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"export: cannot read {path}: {e}") from e
    if data.get("version") != MANIFEST_VERSION:
        return {}
    return dict(data.get("partitions", {}))


def _save_manifest(out: Path, partitions: dict[str, dict[str, Any]]) -> None:
    path = out / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps({"version": MANIFEST_VERSION, "updated_at": _now(), "partitions": partitions},
                   indent=1, sort_keys=True),
        encoding="utf-8",
    )
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
