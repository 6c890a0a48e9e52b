"""Lookalike identifiers: the pure matcher, and the table `dmarclens enrich` fills from the reports."""

from __future__ import annotations

import duckdb
import pytest

from dmarclens.enrich.lookalike import find_lookalikes, lookalike_of, one_edit, skeleton
from dmarclens.enrich.rdns import enrich_db
from dmarclens.query.filters import Filters
from dmarclens.query.traffic import lookalikes
from tests.identity.conftest import rec, report

OWNED = ["example.com", "acme-corp.co.uk"]


@pytest.mark.parametrize(("identifier", "owned", "technique"), [
    ("examp1e.com", "example.com", "homoglyph"),  # digit one for l
    ("exarnple.com", "example.com", "homoglyph"),  # rn for m
    ("xn--xample-2of.com", "example.com", "idn_homoglyph"),  # Cyrillic е, as punycode
    ("еxample.com", "example.com", "idn_homoglyph"),  # the same, in Unicode
    ("xn--exmple-cua.com", "example.com", "idn_homoglyph"),  # exämple: an accent
    ("exmaple.com", "example.com", "typo"),  # swap
    ("examle.com", "example.com", "typo"),  # missing letter
    ("exampple.com", "example.com", "typo"),  # extra letter
    ("exbmple.net", "example.com", "typo"),  # replaced, on another TLD
    ("ex-ample.com", "example.com", "hyphen"),
    ("acmecorp.co.uk", "acme-corp.co.uk", "hyphen"),
    ("example-login.com", "example.com", "added_word"),
    ("secureexample.net", "example.com", "added_word"),
    ("acme-corp-billing.com", "acme-corp.co.uk", "added_word"),
    ("example.net", "example.com", "other_tld"),
    ("example.co.uk", "example.com", "other_tld"),
    ("bounce.example.org", "example.com", "other_tld"),  # subdomain of a lookalike
    ("example.com.mail-check.net", "example.com", "embedded"),
])
def test_lookalikes_found(identifier: str, owned: str, technique: str) -> None:
    match = lookalike_of(identifier, OWNED)
    assert match is not None, identifier
    assert (match.owned, match.technique) == (owned, technique)
    assert match.detail  # one plain sentence for the dashboard and the alert


@pytest.mark.parametrize("identifier", [
    "example.com", "EXAMPLE.COM.", "mail.example.com", "em4821.example.com",  # ours
    "sendgrid.net", "amazonses.com", "google.com", "outlook.com",  # unrelated
    "exa.com", "ample.com",  # too short or too different to be one edit away
    "", None,
])
def test_not_lookalikes(identifier: str | None) -> None:
    assert lookalike_of(identifier, OWNED) is None


def test_owned_domains_are_never_lookalikes_of_each_other() -> None:
    assert lookalike_of("example.net", ["example.com", "example.net"]) is None
    assert lookalike_of("a.example.net", ["example.com", "example.net"]) is None


def test_building_blocks() -> None:
    assert skeleton("pаypa1") == skeleton("paypal")  # Cyrillic а and digit 1
    assert one_edit("exmaple", "example") == '"am" swapped'
    assert one_edit("example", "example") is None
    assert one_edit("exampel", "example") == '"le" swapped'
    assert one_edit("abcdef", "example") is None
    hits = find_lookalikes(["examp1e.com", "example.com", "examp1e.com", "other.org"], ["example.com"])
    assert [h.identifier for h in hits] == ["examp1e.com"]


def test_enrich_fills_the_lookalike_table(ingest_specs) -> None:  # type: ignore[no-untyped-def]
    db = ingest_specs([
        report(0, [
            rec("192.0.2.1", 20, dkim=[("example.com", "s1", "pass")], spf=[("example.com", "pass")]),
            rec("192.0.2.2", 7, envelope_from="bounce.examp1e.com", dkim=[("examp1e.com", "k", "pass")],
                spf=[("bounce.examp1e.com", "pass")]),
            rec("192.0.2.3", 3, envelope_from="example-billing.com", spf=[("example-billing.com", "pass")]),
        ]),
        report(1, [rec("192.0.2.2", 5, envelope_from="bounce.examp1e.com", spf=[("bounce.examp1e.com", "pass")])]),
    ])
    stats = enrich_db(db, resolve=False, owned_domains=["example.com"])
    assert stats.lookalikes == 3
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT identifier, identifier_kind, owned_domain, technique, messages, first_seen < last_seen "
            "FROM identifier_lookalikes ORDER BY identifier, identifier_kind").fetchall()
        assert rows == [
            ("bounce.examp1e.com", "envelope_from", "example.com", "homoglyph", 12, True),
            ("examp1e.com", "dkim_domain", "example.com", "homoglyph", 7, False),
            ("example-billing.com", "envelope_from", "example.com", "added_word", 3, False),
        ]
        df = lookalikes(con, Filters(domains=("example.com",)))
        assert df is not None and len(df) == 3
