"""The shipped sample reports: detection finds exactly the generator's planted stories."""

from __future__ import annotations

from pathlib import Path

from dmarclens.detect.model import RANK
from dmarclens.detect.run import detect_and_store
from dmarclens.generator import build_world

EXPECTED_KIND = {
    "passing-abuse": {"new_ip_range_in_authorized_provider", "volume_spike"},
    "spoofing": {"spoofing_burst"},
    "auth-regression": {"auth_regression"},
    "new-sender": {"new_source"},
}


def test_sample_stories_and_nothing_else(sample_db: Path) -> None:
    stories = build_world().stories  # the same seed and days write_samples uses
    found = [a for a in detect_and_store(sample_db) if RANK[a.severity] >= RANK["medium"]]
    for story in stories:
        hits = [a for a in found if a.domain == story.domain and a.kind in EXPECTED_KIND[story.kind]
                and a.first_day <= story.last_day and a.last_day >= story.first_day]
        assert hits, f"story {story.key} ({story.title}) not reported"
        assert min(abs((a.first_day - story.first_day).days) for a in hits) <= 1
        if story.key == "m365-burst":
            assert max(RANK[a.severity] for a in hits) >= RANK["high"]
            assert any(a.identity.get("ip_range") == story.networks[0] for a in hits)
    assert len(found) == len(stories), [(a.kind, a.domain, a.first_day) for a in found]
