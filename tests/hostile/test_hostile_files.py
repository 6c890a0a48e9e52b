"""Hostile input, file side: one `dmarclens ingest` over a folder holding every case
of tests/hostile/cases.py between ordinary reports.

Asserted for each case: the run goes on (exit 3, no traceback), the input gets
the outcome and reason decided for it in ingest_items, the ordinary reports
around it are stored exactly, the inputs are untouched, and the process
stays under RSS_LIMIT_MB while bombs go off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hostile.cases import (
    CASES,
    CONTROL,
    GOOD_IDS,
    GOOD_MESSAGES,
    HTML,
    OWNED,
    SECRET,
    Case,
    materialize,
)
from tests.hostile.helpers import (
    RSS_LIMIT_MB,
    Measured,
    all_strings,
    clean_env,
    rows,
    run_measured,
    unsafe_chars,
)


@dataclass
class Batch:
    folder: Path
    db: Path
    run: Measured
    summary: dict
    items: dict[str, list[tuple[str, str | None, str | None]]]  # file name -> (outcome, reason, member)
    before: dict[str, tuple[int, int]]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "batch"
    materialize(folder)
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}
    db = root / "hostile.duckdb"
    run = run_measured(["ingest", str(folder), "--db", str(db), "--json"], cwd=root,
                       env=clean_env({"DMARCLENS_DOMAINS": OWNED}))
    items: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for origin, outcome, reason, member in rows(db, "SELECT origin, outcome, reason, member FROM ingest_items "
                                                    "ORDER BY item_id"):
        items.setdefault(Path(origin).name, []).append((outcome, reason, member))
    print(f"\nhostile batch: {len(CASES)} cases, peak RSS {run.peak_mb:.0f} MB")  # recorded in docs/reliability.md
    return Batch(folder, db, run, json.loads(run.stdout) if run.stdout else {}, items, before)


def test_the_run_finishes_with_exit_3_and_no_traceback(batch: Batch) -> None:
    assert batch.run.returncode == 3, batch.run.stderr[-3000:]
    assert "Traceback" not in batch.run.stderr
    assert batch.summary["rejected"], "the summary lists the rejected inputs"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_case_gets_its_decided_outcome_and_reason(batch: Batch, case: Case) -> None:
    got = batch.items.get(case.name)
    assert got, f"{case.name}: no ingest_items row at all (lost silently)"
    assert len(got) == case.rows, got
    for outcome, reason, _member in got:
        assert outcome == case.outcome, (case.name, outcome, reason)
        if case.reason is None:
            assert reason is None, (case.name, reason)
        else:
            assert reason and case.reason in reason.lower(), (case.name, reason)
            # one stderr line names the input and says what happened
            assert any(case.name in line and case.reason in line.lower() for line in batch.run.stderr.splitlines())


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_ordinary_reports_in_the_same_batch_are_stored_exactly(batch: Batch) -> None:
    got = dict(rows(batch.db, "SELECT report_id, message_count FROM reports WHERE report_id LIKE 'good-%'"))
    assert got == {rid: 127 for rid in GOOD_IDS}
    assert rows(batch.db, "SELECT sum(count) FROM records r JOIN reports p USING (report_key) "
                          "WHERE p.report_id LIKE 'good-%'") == [(GOOD_MESSAGES,)]


def test_memory_stays_bounded_under_the_bombs(batch: Batch) -> None:
    assert batch.run.peak_mb < RSS_LIMIT_MB, f"peak RSS {batch.run.peak_mb:.0f} MB"


def test_inputs_are_left_untouched(batch: Batch) -> None:
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in batch.folder.iterdir()}
    assert after == batch.before
    assert not list(batch.folder.parent.rglob("evil.xml")), "a zip member name must never become a path"


def test_every_rejection_has_a_plain_reason_free_of_control_characters(batch: Batch) -> None:
    for name, got in batch.items.items():
        for outcome, reason, member in got:
            if outcome == "rejected":
                assert reason and len(reason) < 600, name
            for text in (reason or "", member or ""):
                assert not unsafe_chars(text), (name, text)


def test_no_stored_string_carries_control_or_invisible_characters(batch: Batch) -> None:
    bad = [(t, c, v) for t, c, v in all_strings(batch.db) if unsafe_chars(v)]
    assert bad == []


def test_the_xxe_target_never_reaches_the_database(batch: Batch) -> None:
    assert (batch.folder.parent / "xxe-secret.txt").read_text() == SECRET
    assert SECRET.encode() not in batch.db.read_bytes()
    assert not [v for _, _, v in all_strings(batch.db) if SECRET in v]


def test_control_characters_are_replaced_visibly_not_deleted(batch: Batch) -> None:
    [(org, email, extra, rid)] = rows(batch.db, "SELECT org_name, org_email, org_extra_contact, report_id FROM "
                                                "reports WHERE report_id LIKE 'ctl%'")
    assert rid == "ctl id\ufffdx"  # tab -> space, LRI -> U+FFFD
    assert org.startswith("Goo\ufffdgle")  # the RLO that would reverse the name on screen
    assert extra == "line one line two\ufffd31m"  # newline -> space, 8-bit CSI neutralised
    assert "\x1b" not in (email or "")
    [(header_from, dkim, reasons)] = rows(batch.db, "SELECT header_from, dkim, override_reasons FROM records r "
                                                    "JOIN reports p USING (report_key) WHERE p.report_id LIKE 'ctl%'")
    # A zero-width character must not turn a lookalike into the owner's own domain.
    assert header_from == "exa\ufffdmple.com" != OWNED
    assert dkim[0]["selector"] == "sel\ufffdector"
    assert reasons[0]["comment"] == "forwarded\ufffd by list"
    assert CONTROL  # the inputs the assertions above were written against


def test_html_and_markdown_are_stored_verbatim(batch: Batch) -> None:
    [(org, extra)] = rows(batch.db, "SELECT org_name, org_extra_contact FROM reports WHERE report_id LIKE 'html%'")
    assert org == HTML["org"]
    assert extra == HTML["extra"]
    [(envelope_from, reasons)] = rows(batch.db, "SELECT envelope_from, override_reasons FROM records r JOIN reports p "
                                                "USING (report_key) WHERE p.report_id LIKE 'html%'")
    assert envelope_from == HTML["envelope_from"]
    assert reasons[0]["comment"] == HTML["comment"]


def test_a_report_for_a_domain_not_owned_is_stored_apart_and_counted_nowhere(batch: Batch) -> None:
    [(key, owned, msgs)] = rows(batch.db, "SELECT report_key, owned, message_count FROM v_report_trust "
                                          "WHERE domain = 'attacker.example'")
    assert owned is False and msgs == 127
    assert rows(batch.db, "SELECT count(*), sum(count) FROM foreign_records WHERE report_key = ?", [key]) == [(2, 127)]
    assert rows(batch.db, "SELECT count(*) FROM records WHERE report_key = ?", [key]) == [(0,)]
    assert rows(batch.db, "SELECT count(*) FROM v_records WHERE domain = 'attacker.example'") == [(0,)]
    assert rows(batch.db, "SELECT count(*) FROM v_daily WHERE domain = 'attacker.example'") == [(0,)]
    assert rows(batch.db, "SELECT count(*) FROM rollup_source_daily WHERE domain = 'attacker.example'") == [(0,)]
    [(reason,)] = rows(batch.db, "SELECT reason FROM ingest_items WHERE report_key = ?", [key])
    assert "not one of your domains" in reason


def test_repairs_keep_the_good_part_of_the_report(batch: Batch) -> None:
    assert rows(batch.db, "SELECT source_ip FROM records r JOIN reports p USING (report_key) "
                          "WHERE p.report_id = 'zone'") == [("fe80::1",)]
    # the unreadable record is skipped, the other one stored
    assert rows(batch.db, "SELECT source_ip, count FROM records r JOIN reports p USING (report_key) "
                          "WHERE p.report_id = 'badip'") == [("40.107.22.12", 5)]
    assert rows(batch.db, "SELECT record_count FROM reports WHERE report_id = 'emptyreason'") == [(2,)]
    for rid in ("utf16", "cp1252", "nested1", "ns", "fwd2", "emptyreason"):
        assert rows(batch.db, "SELECT message_count FROM reports WHERE report_id = ?", [rid]) == [(127,)], rid
    assert rows(batch.db, "SELECT xml_namespace FROM reports WHERE report_id = 'ns'") == [("urn:x:evil",)]


def test_a_conflicting_copy_never_replaces_or_adds_to_the_first(batch: Batch) -> None:
    assert rows(batch.db, "SELECT message_count FROM reports WHERE report_id = 'conflict'") == [(127,)]


def test_a_second_run_stores_nothing_new_and_rejects_the_same(batch: Batch, tmp_path: Path) -> None:
    again = run_measured(["ingest", str(batch.folder), "--db", str(batch.db), "--json"], cwd=tmp_path,
                         env=clean_env({"DMARCLENS_DOMAINS": OWNED}))
    out = json.loads(again.stdout)
    assert again.returncode == 3
    assert out["stored"] == 0
    assert out["duplicates"] == batch.summary["stored"] + batch.summary["duplicates"]
    assert len(out["rejected"]) == len(batch.summary["rejected"])
    assert rows(batch.db, "SELECT count(*) FROM reports") == [(batch.summary["stored"],)]
