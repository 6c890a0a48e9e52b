"""The ``Anomaly`` record and the small vocabularies around it (kinds, severities).

Kept free of I/O so rules, the store, the CLI, the alerter and the dashboard
all speak the same shape, and so the JSON contract of ``dmarclens detect
--format json`` lives in exactly one function (``Anomaly.to_json``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from typing import Any

SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
RANK: dict[str, int] = {name: i for i, name in enumerate(SEVERITIES)}

KINDS: tuple[str, ...] = (
    "new_source",
    "volume_spike",
    "new_ip_range_in_authorized_provider",
    "new_identifier",
    "audience_shift",
    "auth_regression",
    "spoofing_burst",
    "dormant_source_revived",
    "lookalike_identifier",
    "contract_violation",
)

# Novelty findings: once the owner says "this identity is fine", every later
# finding about it is a repeat. Volume-type findings recur legitimately, so an
# acknowledgement only covers later episodes that are not more severe.
REPEAT_RULE: dict[str, str] = {
    "new_source": "identity",
    "new_ip_range_in_authorized_provider": "identity",
    "new_identifier": "identity",
    "audience_shift": "identity",
    "lookalike_identifier": "identity",
    "contract_violation": "identity",
    "volume_spike": "severity",
    "auth_regression": "severity",
    "spoofing_burst": "severity",
    "dormant_source_revived": "severity",
}

# Order of identity keys in identity_key and in printed output: coarse to fine.
IDENTITY_KEYS: tuple[str, ...] = (
    "service",
    "asn",
    "base_domain",
    "ip_range",
    "envelope_from",
    "dkim_domain",
    "dkim_selector",
    "header_from",
    "reporter",
    "envelope_to",
)


def clamp_severity(rank: int) -> str:
    return SEVERITIES[max(0, min(len(SEVERITIES) - 1, int(rank)))]


def identity_key(identity: dict[str, Any]) -> str:
    """Canonical text of an identity: the key acknowledgements and ids use."""
    parts = []
    for key in IDENTITY_KEYS:
        value = identity.get(key)
        if value not in (None, ""):
            parts.append(f"{key}={value}")
    for key in sorted(set(identity) - set(IDENTITY_KEYS)):
        value = identity[key]
        if value not in (None, ""):
            parts.append(f"{key}={value}")
    return "|".join(parts)


def anomaly_id(kind: str, domain: str, ident_key: str, first_day: date) -> str:
    """Deterministic id, so re-running detection updates instead of duplicating."""
    text = "\x1f".join([kind, domain.lower(), ident_key, first_day.isoformat()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Anomaly:
    """One finding: what changed, for which identity, when, how big, and why it matters."""

    kind: str
    severity: str
    domain: str
    identity: dict[str, Any]
    first_day: date
    last_day: date
    messages: int
    expected: float
    passed: int
    failed: int
    explanation: str
    score: float = 0.0
    ips: list[str] = field(default_factory=list)
    report_keys: list[str] = field(default_factory=list)
    report_ids: list[str] = field(default_factory=list)
    reporters: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    status: str = "open"
    new: bool = False  # stored for the first time by this run

    def __post_init__(self) -> None:
        self.identity = {k: v for k, v in self.identity.items() if v not in (None, "")}
        if not self.id:
            self.id = anomaly_id(self.kind, self.domain, self.identity_key, self.first_day)

    @property
    def identity_key(self) -> str:
        return identity_key(self.identity)

    @property
    def severity_rank(self) -> int:
        return RANK[self.severity]

    @property
    def dmarc(self) -> str:
        if self.failed <= 0 < self.passed or (self.passed == 0 and self.failed == 0):
            return "pass"
        if self.passed <= 0 < self.failed:
            return "fail"
        return "mixed"

    @property
    def repeat_rule(self) -> str:
        return REPEAT_RULE.get(self.kind, "severity")

    def to_json(self) -> dict[str, Any]:
        """The documented JSON element of ``dmarclens detect --format json``."""
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "domain": self.domain,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "identity": {k: self.identity[k] for k in _ordered(self.identity)},
            "ips": list(self.ips),
            "messages": int(self.messages),
            "expected": round(float(self.expected), 1),
            "passed": int(self.passed),
            "failed": int(self.failed),
            "dmarc": self.dmarc,
            "explanation": self.explanation,
            "evidence": {
                "report_ids": list(self.report_ids),
                "reporters": list(self.reporters),
                "report_keys": list(self.report_keys),
            },
            "score": round(float(self.score), 2),
            "status": self.status,
            "details": self.details,
        }


def _ordered(identity: dict[str, Any]) -> list[str]:
    known = [k for k in IDENTITY_KEYS if k in identity]
    return known + sorted(set(identity) - set(known))
