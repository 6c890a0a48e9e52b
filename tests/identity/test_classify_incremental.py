"""Incremental classification after ingest gives exactly what a full recompute gives.

Databases are built from dmarclens' generator (the 45-day world, and the
hand-made history of test_classify.py that hits every rule), ingested in
several orders and batches: a late report for a day before everything
stored, a new domain, a report that moves a domain's first day earlier,
overrides in the settings. After each batch the post-ingest step runs
(``classify.update``, incremental); its classes and lookalike rows are then
compared with a full recompute of a copy of the same file. Rows are compared
as sorted multisets keyed by their content (rowids differ between files).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dmarclens.enrich import classify
from dmarclens.enrich.lookalike import _match, could_imitate, lookalike_of, to_ascii
from dmarclens.generator import ReportSpec, build_world, render_report
from dmarclens.store.db import open_db
from tests.identity.conftest import rec, report, write_reports
from tests.identity.test_classify import RULES as CLASSIFY_RULES
from tests.identity.test_classify import _history

START = date(2026, 6, 1)
DAYS = 45
FORWARDER_NET = "103.168.172.0/24"  # the world's Fastmail forwarding source

WORLD_RULES: dict[str, Any] = {"identity": {
    # Short windows, so batches fall on both sides of them; a first-days period longer than the
    # history window, so moving a domain's first day earlier reaches past it.
    "history_days": 4,
    "min_history_days": 9,
    "overrides": [  # each catches part of a source, the rest goes through the rules
        {"action": "forwarder", "ip": ["103.168.172.150/32"]},  # one of the Fastmail forwarding IPs
        {"domain": "example.org", "action": "authorized", "envelope_from": "googlegroups.com",
         "ip": ["209.85.220.103/32", "209.85.220.104/32"]},
        {"domain": "example.com", "action": "forwarder", "dkim_domain": "lists.university.example"},
    ],
}}


@pytest.fixture(scope="module")
def world() -> list[ReportSpec]:
    return list(build_world(7, DAYS, START).reports)


def _day(spec: ReportSpec, start: date = START) -> int:
    return (datetime.fromtimestamp(spec.begin, UTC).date() - start).days


def _ingest(tmp: Path, db: Path, specs: Sequence[ReportSpec], name: str) -> None:
    from dmarclens.ingest.writer import ingest_paths

    folder = tmp / name
    folder.mkdir()
    for n, spec in enumerate(specs):
        (folder / f"{n:05d}.xml").write_bytes(render_report(spec))
    summary = ingest_paths([folder], db)
    assert summary.stored > 0, summary.to_json()


def _update(db: Path, raw: dict[str, Any], owned: Sequence[str] = ()) -> classify.Refreshed:
    """The post-ingest step, as enrich_db(resolve=False) runs it."""
    with open_db(db) as con:
        con.execute("BEGIN")
        done = classify.update(con, classify.rules_from_settings(raw), owned)
        con.execute("COMMIT")
    return done


_ROWS = """SELECT p.report_id, p.org_name, p.domain, r.day, r.source_ip, r.count, r.header_from,
                  r.envelope_from, r.dkim::VARCHAR, r.spf::VARCHAR, r.override_reasons::VARCHAR,
                  r.traffic_class, r.class_reason
           FROM records r JOIN reports p USING (report_key)"""
_LOOKALIKES = """SELECT identifier, identifier_kind, owned_domain, technique, detail, messages, first_seen, last_seen
                 FROM identifier_lookalikes"""


def _snapshot(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(_ROWS).fetchall()
        looks = con.execute(_LOOKALIKES).fetchall()
    return sorted(rows, key=repr), sorted(looks, key=repr)


def _full(db: Path, raw: dict[str, Any], owned: Sequence[str] = ()) -> tuple[list[Any], list[Any]]:
    """A copy of ``db`` recomputed from scratch: every class, the whole lookalike table."""
    copy = db.with_name(db.stem + "-full.duckdb")
    shutil.copy(db, copy)
    with open_db(copy) as con:
        con.execute("BEGIN")
        con.execute("UPDATE records SET traffic_class = NULL, class_reason = NULL")
        classify.refresh(con, classify.rules_from_settings(raw))
        classify.refresh_lookalikes(con, owned)
        con.execute("COMMIT")
    out = _snapshot(copy)
    copy.unlink()
    return out


def _assert_same_as_full(db: Path, raw: dict[str, Any], owned: Sequence[str] = ()) -> None:
    rows, looks = _snapshot(db)
    full_rows, full_looks = _full(db, raw, owned)
    assert all(r[-2] is not None for r in rows), "a row was left unclassified"
    assert len(rows) == len(full_rows)
    diff = [(a, b) for a, b in zip(rows, full_rows, strict=True) if a != b]
    assert not diff, f"{len(diff)} rows differ from a full recompute, e.g. {diff[:3]}"
    assert looks == full_looks


def _state(db: Path) -> tuple[str, str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT mode, reason FROM classify_state").fetchone()  # type: ignore[return-value]


def _batches_by_day(world: list[ReportSpec], ranges: Sequence[tuple[int, int]],
                    domains: Sequence[str] | None = None) -> list[list[ReportSpec]]:
    return [[s for s in world if lo <= _day(s) < hi and (domains is None or s.policy.domain in domains)]
            for lo, hi in ranges]


def test_late_report_new_domain_and_earlier_first_day(world: list[ReportSpec], tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    two = ("example.com", "example.org")
    steps = _batches_by_day(world, [(12, 24), (24, 33)], two)
    late = [s for s in world if _day(s) == 9 and s.policy.domain == "example.com"][:1]  # before everything
    steps.append(late)
    steps.append([s for s in world if s.policy.domain == "shop.example.net" and _day(s) >= 20])  # new domain
    steps.append([s for s in world if s.policy.domain == "shop.example.net" and 14 <= _day(s) < 20])  # earlier
    steps += _batches_by_day(world, [(33, DAYS)], two)
    steps.append(list(world))  # the rest: the first days of every domain
    seen: set[int] = set()
    domains: set[str] = set()
    for n, batch in enumerate(steps):
        batch = [s for s in batch if id(s) not in seen]
        seen |= {id(s) for s in batch}
        _ingest(tmp_path, db, batch, f"step{n}")
        done = _update(db, WORLD_RULES)
        assert done.mode == "incremental", done
        # No domain list configured: the owned domains are the reported ones, so a new one rebuilds.
        grew = not {s.policy.domain for s in batch} <= domains
        domains |= {s.policy.domain for s in batch}
        assert done.lookalikes_mode == ("full" if grew else "incremental")
        if n:
            with duckdb.connect(str(db), read_only=True) as con:
                total = con.execute("SELECT count(*) FROM records").fetchone()[0]  # type: ignore[index]
            assert done.recomputed < total  # it really was a part
        _assert_same_as_full(db, WORLD_RULES)
    assert seen == {id(s) for s in world}
    with duckdb.connect(str(db), read_only=True) as con:
        reasons = {r[0] for r in con.execute("SELECT split_part(class_reason, ' ', 1) FROM records").fetchall()}
    # The history-dependent rules and the overrides all had rows to decide.
    assert {"override", "known_forwarder", "known_dkim", "too_little_history", "unknown_source"} <= reasons


@pytest.mark.parametrize("seed", [1, 2])
def test_random_batches_default_rules(world: list[ReportSpec], tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    specs = list(world)
    rng.shuffle(specs)
    cuts = sorted(rng.sample(range(1, len(specs)), 4))
    db = tmp_path / "r.duckdb"
    for n, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, len(specs)], strict=True)):
        _ingest(tmp_path, db, specs[lo:hi], f"b{n}")
        assert _update(db, {}).mode == "incremental"
    _assert_same_as_full(db, {})


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_every_rule_in_both_orders_with_overrides(tmp_path: Path, order: str) -> None:
    specs = _history()
    db = tmp_path / "h.duckdb"
    # forward: the history, then day 10 reads it. reverse: day 10 first (all failures, nothing known
    # yet), then the history before it, newest first. The legacy report for day 2 comes last, and a
    # lookalike arrives with every batch.
    legacy = [s for s in specs if s.org_name == "legacy.example"]
    spans = [(0, 5), (5, 10), (10, 11)] if order == "forward" else [(10, 11), (5, 10), (0, 5)]
    batches = [[s for s in specs if lo <= _day_of(s) < hi and s not in legacy] for lo, hi in spans] + [legacy]
    for n, batch in enumerate(batches):
        batch = [*batch, report(n + 11, [rec("192.0.2.150", n + 1, envelope_from="examp1e.com",
                                             spf=[("examp1e.com", "pass")])], org=f"look{n}.example")]
        _ingest(tmp_path, db, batch, f"h{n}")
        assert _update(db, CLASSIFY_RULES, ["example.com"]).mode == "incremental"
        _assert_same_as_full(db, CLASSIFY_RULES, ["example.com"])
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT messages, first_seen, last_seen FROM identifier_lookalikes "
                           "WHERE identifier = 'examp1e.com'").fetchall() == [
            (1 + 2 + 3 + 4, date(2026, 10, 12), date(2026, 10, 15))]
        reasons = {r[0] for r in con.execute("SELECT split_part(class_reason, ' ', 1) FROM records").fetchall()}
    assert {"known_network", "known_dkim", "too_little_history", "override"} <= reasons


def test_an_ip_whose_network_is_filled_later_has_its_rows_recomputed(tmp_path: Path) -> None:
    from tests.identity.test_classify import OWN_MTA

    db = tmp_path / "n.duckdb"
    _ingest(tmp_path, db, _history(), "a")
    with open_db(db) as con:  # a writer that stored the records but not (yet) the IP's facts
        con.execute("DELETE FROM ip_info WHERE ip = ?", [OWN_MTA])
    _update(db, CLASSIFY_RULES)
    with open_db(db) as con:
        assert con.execute("SELECT DISTINCT class_reason FROM records WHERE source_ip = ? AND NOT dmarc_pass",
                           [OWN_MTA]).fetchall() == [("unknown_source",)]  # no network, no history
        con.execute("INSERT INTO ip_info (ip, offline_resolved_at) VALUES (?, now())", [OWN_MTA])
    done = _update(db, CLASSIFY_RULES)
    assert done.mode == "incremental" and done.changed == 1
    _assert_same_as_full(db, CLASSIFY_RULES)


def test_rows_before_the_scope_are_history_only(tmp_path: Path) -> None:
    from tests.identity.test_classify import OWN_MTA

    # The own MTA fails on day 10; with a 2-day memory and a bar of 60 passed messages it is a known
    # network only through days 8 and 9 together (50 each). A report for day 11 recomputes from day
    # 11 and reads days 9-10 as history: day 10 must keep the class its own full window gave it.
    raw = {"identity": {"history_days": 2, "min_passing_messages": 60}}
    db = tmp_path / "b.duckdb"
    _ingest(tmp_path, db, _history(), "a")
    _update(db, raw)
    _ingest(tmp_path, db, [report(11, [rec("192.0.2.77", 3, spf=[("example.com", "fail")])], org="late.example")],
            "b")
    done = _update(db, raw)
    assert done.mode == "incremental" and done.recomputed == 1
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT class_reason FROM records WHERE source_ip = ? AND NOT dmarc_pass",
                           [OWN_MTA]).fetchall() == [("known_network 198.51.100.0/24",)]
    _assert_same_as_full(db, raw)


def _day_of(spec: ReportSpec) -> int:
    return _day(spec, date(2026, 10, 1))


def test_rules_change_recomputes_everything(world: list[ReportSpec], tmp_path: Path) -> None:
    db = tmp_path / "c.duckdb"
    _ingest(tmp_path, db, [s for s in world if _day(s) < 20], "a")
    assert _update(db, {}).mode == "incremental"
    _ingest(tmp_path, db, [s for s in world if 20 <= _day(s) < 30], "b")
    assert _update(db, {}).mode == "incremental"
    done = _update(db, WORLD_RULES)
    assert (done.mode, done.reason, done.lookalikes_mode) == ("full", "rules changed", "full")
    assert done.changed > 0
    _assert_same_as_full(db, WORLD_RULES)
    # Same rules again, nothing new: nothing to do.
    again = _update(db, WORLD_RULES)
    assert (again.mode, again.recomputed, again.changed) == ("incremental", 0, 0)
    # Another owned-domain list: classes stay incremental, the lookalike table is rebuilt.
    _ingest(tmp_path, db, [s for s in world if _day(s) >= 30], "c")
    other = _update(db, WORLD_RULES, ["example.com"])
    assert (other.mode, other.lookalikes_mode) == ("incremental", "full")
    _assert_same_as_full(db, WORLD_RULES, ["example.com"])


def test_rows_left_unclassified_by_a_crash_are_classified_next_time(world: list[ReportSpec],
                                                                     tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    _ingest(tmp_path, db, [s for s in world if 10 <= _day(s) < 25], "a")
    _update(db, WORLD_RULES)
    # Stored, then the process died before classifying (the ingest had committed).
    _ingest(tmp_path, db, [s for s in world if _day(s) < 10], "crashed")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM records WHERE traffic_class IS NULL").fetchone()[0] > 0  # type: ignore[index]
    _ingest(tmp_path, db, [s for s in world if _day(s) >= 25], "next")
    assert _update(db, WORLD_RULES).mode == "incremental"
    _assert_same_as_full(db, WORLD_RULES)


def test_removed_rows_and_missing_state_recompute_everything(world: list[ReportSpec], tmp_path: Path) -> None:
    db = tmp_path / "d.duckdb"
    _ingest(tmp_path, db, [s for s in world if _day(s) < 30], "a")
    _update(db, {})
    with open_db(db) as con:  # rows leave records (what hiding a domain does)
        con.execute("DELETE FROM records WHERE report_key IN "
                    "(SELECT report_key FROM reports WHERE domain = 'example.org')")
    _ingest(tmp_path, db, [s for s in world if _day(s) >= 30 and s.policy.domain != "example.org"], "b")
    done = _update(db, {})
    assert done.mode == "full" and "removed" in done.reason
    _assert_same_as_full(db, {})
    with open_db(db) as con:  # classified by a version without the state table
        con.execute("DELETE FROM classify_state")
    assert _update(db, {}).reason == "no saved refresh state"
    _assert_same_as_full(db, {})


def test_cli_ingest_classifies_incrementally_and_hidden_domains_recompute(
        world: list[ReportSpec], tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "cli.duckdb"
    folders = []
    for n, (lo, hi) in enumerate([(20, 30), (0, 20), (30, DAYS)]):
        folders.append(write_reports(tmp_path / f"cli{n}", [s for s in world if lo <= _day(s) < hi]))
    cfg = tmp_path / "dmarclens.toml"
    cfg.write_text('[[identity.overrides]]\naction = "forwarder"\nip = ["103.168.172.0/24"]\n')
    raw = {"identity": {"overrides": [{"action": "forwarder", "ip": ["103.168.172.0/24"]}]}}
    for folder in folders[:2]:
        res = cli("ingest", str(folder), "--db", str(db), "--config", str(cfg))
        assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
        assert _state(db)[0] == "incremental"
    _assert_same_as_full(db, raw)
    # A domain list that leaves example.org out: its reports are hidden, rows leave records.
    owned = ["example.com", "shop.example.net"]
    cfg.write_text('domains = ["example.com", "shop.example.net"]\n' + cfg.read_text())
    res = cli("ingest", str(folders[2]), "--db", str(db), "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert _state(db)[0] == "full"
    _assert_same_as_full(db, raw, owned)


def test_a_classification_failure_is_a_warning_and_the_next_ingest_catches_up(
        world: list[ReportSpec], tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "f.duckdb"
    bad = tmp_path / "bad.toml"
    bad.write_text("[identity]\nhistory_days = 0\n")
    res = cli("ingest", str(write_reports(tmp_path / "f0", [s for s in world if _day(s) < 5])),
              "--db", str(db), "--config", str(bad))
    assert res.returncode == 0, res.stderr
    assert "warning: traffic classes not updated" in res.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        stored = con.execute("SELECT count(*), count(traffic_class) FROM records").fetchone()
    assert stored is not None and stored[0] > 0 and stored[1] == 0  # reports kept, not classified
    res = cli("ingest", str(write_reports(tmp_path / "f1", [s for s in world if 5 <= _day(s) < 8])),
              "--db", str(db))
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    _assert_same_as_full(db, {})


def test_post_ingest_classification_never_imports_pandas(world: list[ReportSpec], tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    _ingest(tmp_path, db, [s for s in world if _day(s) < 6], "a")
    with open_db(db) as con:  # a writer that left networks unset: the fallback builds Arrow arrays too
        con.execute("UPDATE ip_info SET network = NULL")
    code = (
        "import sys; from dmarclens.enrich.rdns import enrich_db\n"
        f"s = enrich_db(sys.argv[1], resolve=False, settings_raw={WORLD_RULES!r})\n"
        "assert s.classified > 0 and s.classify_mode == 'incremental', s\n"
        "print('pandas' in sys.modules, 'pyarrow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"], out.stderr
    _assert_same_as_full(db, WORLD_RULES)


# ---------------------------------------------------------------------- the public-suffix-free pre-check


def _variants(name: str) -> set[str]:
    """Labels one step from ``name``: every technique's kind of change, and some unrelated ones."""
    out = {name, name + "s", "my" + name, name + "-login", name.replace("e", "3"), name.replace("l", "1"),
           name.replace("m", "rn"), name.replace("o", "0"), name.replace("a", "а"), name[:-1], name[1:]}
    for i in range(len(name)):
        out |= {name[:i] + name[i + 1:], name[:i] + "x" + name[i + 1:], name[:i] + "-" + name[i:]}
        if i + 1 < len(name):
            out.add(name[:i] + name[i + 1] + name[i] + name[i + 2:])
    return {v for v in out if v and not v.startswith("-") and not v.endswith("-")}


def test_could_imitate_never_rules_out_a_match(world: list[ReportSpec]) -> None:
    owned_lists = [["example.com"], ["example.com", "acme-corp.co.uk"], ["shop.example.net", "example.org"],
                   ["exämple.de"]]
    suffixes = ["com", "net", "co.uk", "org", "de", "com.mail-check.net"]
    identifiers = {i.lower() for _, r in build_world(7, 10, START).records()
                   for i in [r.envelope_from or "", *(d.domain for d in r.dkim)]}
    for owned in owned_lists:
        for dom in owned:
            label = to_ascii(dom).split(".")[-2] if dom.count(".") else dom
            base = dom.split(".")[0] if not dom.startswith("shop.") else "example"
            for v in _variants(base) | _variants(label):
                identifiers |= {f"{v}.{s}" for s in suffixes} | {f"mail.{v}.{s}" for s in suffixes[:2]}
            identifiers |= {f"{dom}.evil.example", f"x.{dom}", dom.replace(".", "-") + ".com"}
    matched = ruled_out = 0
    for owned in owned_lists:
        owned_ascii = {to_ascii(d) for d in owned}
        for ident in sorted(identifiers):
            ident_ascii = to_ascii(ident)
            if any(ident_ascii == d or ident_ascii.endswith("." + d) for d in owned_ascii):
                continue
            full = _match(ident, ident_ascii, owned, owned_ascii)
            if not could_imitate(ident_ascii, owned):
                ruled_out += 1
                assert full is None, (ident, owned, full)
            assert lookalike_of(ident, owned) == full
            matched += full is not None
    assert matched > 200 and ruled_out > 50  # the corpus exercises both sides


def test_identifiers_unlike_any_owned_domain_do_not_load_the_suffix_list() -> None:
    code = (
        "from dmarclens.core import domains\n"
        "from dmarclens.enrich import lookalike as L\n"
        "ids = ['sendgrid.net', 'bounce.amazonses.com', 'mail198.atl121.mcsv.net', 'example.com', 'em.example.com']\n"
        "assert [L.lookalike_of(i, ['example.com']) for i in ids] == [None] * 5\n"
        "print(domains.public_suffix_list.cache_info().currsize)\n"
        "assert L.lookalike_of('examp1e.com', ['example.com']).technique == 'homoglyph'\n"
        "print(domains.public_suffix_list.cache_info().currsize)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "1"], out.stderr


def test_scope_reads_only_the_days_new_rows_can_change(world: list[ReportSpec], tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    _ingest(tmp_path, db, [s for s in world if _day(s) < 30], "a")
    _update(db, WORLD_RULES)
    new = [s for s in world if _day(s) == 35 and s.policy.domain == "example.org"
           and s.end - s.begin < 86400 + 10][:1]
    _ingest(tmp_path, db, new, "b")
    done = _update(db, WORLD_RULES)
    day = START + timedelta(days=35)
    # One domain; from four days of history before the new day to four days after it.
    assert done.reason == f"1 domain(s), days {day - timedelta(days=4)} to {day + timedelta(days=4)} read"
    with duckdb.connect(str(db), read_only=True) as con:
        in_day = con.execute("SELECT count(*) FROM v_records WHERE domain = 'example.org' AND day = ?",
                             [day]).fetchone()[0]  # type: ignore[index]
    assert done.recomputed == in_day
    _assert_same_as_full(db, WORLD_RULES)
