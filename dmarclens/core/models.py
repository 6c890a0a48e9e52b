"""Records that cross module lines: what a source hands the parser, what the
parser hands the store, and what an ingest run reports back.

Records are kept columnar (``RecordBatch``) rather than as one object per
``<record>`` because big receivers send reports with tens of thousands of rows:
a list of small dataclasses would cost hundreds of MB for one report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from dmarclens.core.bigfile import Buffer

ReportKind = Literal["aggregate", "failure", "smtp_tls", "unknown"]
Outcome = Literal["stored", "duplicate", "rejected", "ignored"]
ReportFormat = Literal["rfc7489", "rfc9990", "draft"]
OriginKind = Literal["file", "imap", "mbox", "maildir", "eml"]


@dataclass(frozen=True)
class MailAuth:
    """What one mail's own authentication showed (before looking at the report in it).

    Made by ``sources.mailauth.check_mail`` where the mail is read, judged
    against the report by ``ingest.trust.verdict``.
    """

    from_domain: str | None
    authenticated: tuple[tuple[str, str], ...] = ()  # (domain, method) pairs that passed
    detail: str = ""  # why not, when nothing passed

    def to_json(self) -> dict[str, Any]:
        return {"from_domain": self.from_domain, "authenticated": list(self.authenticated), "detail": self.detail}


@dataclass(frozen=True)
class Verdict:
    """The stored verdict on one report's mail (``report_trust``)."""

    mail_auth: str  # verified | unverified | not_mail
    method: str | None = None
    domain: str | None = None
    detail: str = ""


NOT_MAIL = Verdict("not_mail", detail="read from a file, not a mail: there is no mail authentication to check")


@dataclass(frozen=True)
class RawItem:
    """One input item as a source found it: bytes plus where they came from.

    ``origin`` is what a person needs to find the item again (a path, or
    ``imap://user@host/INBOX;UID=42``); ``member`` names the part inside it
    (a zip member, a MIME attachment) when one input holds several reports.
    """

    data: Buffer  # the bytes, or a read-only map of a big file (core.bigfile)
    origin: str
    origin_kind: OriginKind = "file"
    member: str | None = None
    name: str | None = None  # file name or attachment file name, used for sniffing
    mailbox: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None
    message_id: str | None = None
    mail_from_domain: str | None = None  # sender of the report mail, fallback for empty org_name
    problem: str | None = None  # set when the source already knows the item is unusable
    kind_hint: str | None = None  # "failure" for RUF mail recognised by its MIME structure
    mail_auth: MailAuth | None = None  # the carrying mail's own authentication; None for bare files

    @property
    def sha256(self) -> str:
        from dmarclens.core.bigfile import sha256_hex

        return sha256_hex(self.data)  # ``data`` may be a mapped big file


@dataclass(frozen=True)
class PolicyPublished:
    domain: str
    adkim: str = "r"
    aspf: str = "r"
    p: str | None = None
    sp: str | None = None
    np: str | None = None
    pct: int | None = None
    fo: str | None = None
    testing: str | None = None
    discovery_method: str | None = None


@dataclass
class RecordBatch:
    """Column lists for the records of one report, already split into days.

    Every list has the same length. ``dkim``/``spf`` hold lists of dicts
    (``{"domain", "selector", "result"}`` / ``{"domain", "scope", "result"}``)
    and ``override_reasons`` lists of ``{"type", "comment"}`` so DuckDB can
    store them as ``STRUCT[]`` columns straight from Arrow.
    """

    day: list[Any] = field(default_factory=list)  # datetime.date
    interval_begin: list[datetime] = field(default_factory=list)
    interval_end: list[datetime] = field(default_factory=list)
    source_ip: list[str] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    disposition: list[str] = field(default_factory=list)
    policy_dkim: list[str] = field(default_factory=list)
    policy_spf: list[str] = field(default_factory=list)
    dkim_aligned: list[bool] = field(default_factory=list)
    spf_aligned: list[bool] = field(default_factory=list)
    dmarc_pass: list[bool] = field(default_factory=list)
    override_reasons: list[list[dict[str, str | None]]] = field(default_factory=list)
    header_from: list[str | None] = field(default_factory=list)
    envelope_from: list[str | None] = field(default_factory=list)
    envelope_to: list[str | None] = field(default_factory=list)
    dkim: list[list[dict[str, str | None]]] = field(default_factory=list)
    spf: list[list[dict[str, str | None]]] = field(default_factory=list)

    COLUMNS = (
        "day", "interval_begin", "interval_end", "source_ip", "count", "disposition",
        "policy_dkim", "policy_spf", "dkim_aligned", "spf_aligned", "dmarc_pass",
        "override_reasons", "header_from", "envelope_from", "envelope_to", "dkim", "spf",
    )

    def __len__(self) -> int:
        return len(self.source_ip)

    @property
    def messages(self) -> int:
        return sum(self.count)

    def columns(self) -> dict[str, list[Any]]:
        return {name: getattr(self, name) for name in self.COLUMNS}


@dataclass
class Report:
    """One aggregate report, normalized. Times are timezone-aware UTC."""

    org_name: str
    org_email: str | None
    org_extra_contact: str | None
    report_id: str
    begin: datetime
    end: datetime
    policy: PolicyPublished
    format: ReportFormat
    xml_schema: str | None
    xml_namespace: str | None
    generator: str | None
    errors: list[str]
    records: RecordBatch
    parser: str = "parsedmarc"  # which code path produced it ("parsedmarc" or "fast")
    warnings: list[str] = field(default_factory=list)  # what parsing had to skip or repair

    @property
    def domain(self) -> str:
        return self.policy.domain

    @property
    def key(self) -> str:
        """Stable identity of a report across re-sends and file names.

        Built from what the reporter says the report *is* (who, which id, which
        domain, which interval), not from the bytes, so a re-sent copy with a
        different file name or wrapper is recognised as the same report.
        """
        parts = [
            self.org_name.strip().lower(),
            self.report_id.strip(),
            self.policy.domain.strip().lower(),
            str(int(self.begin.timestamp())),
            str(int(self.end.timestamp())),
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ParsedItem:
    """What parsing one RawItem produced: an aggregate report, or a recognised
    non-aggregate report (failure/RUF, SMTP TLS), recorded but not counted."""

    kind: ReportKind
    report: Report | None = None
    raw_xml: Buffer | None = None
    summary: str | None = None  # short description for non-aggregate kinds


@dataclass
class ItemResult:
    """Outcome of one input item, as recorded in ``ingest_items``."""

    origin: str
    origin_kind: str
    outcome: Outcome
    kind: ReportKind = "unknown"
    member: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    report_key: str | None = None
    domain: str | None = None
    reason: str | None = None
    records: int = 0
    messages: int = 0
    mailbox: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None
    message_id: str | None = None


@dataclass
class RunSummary:
    """What ``dmarclens ingest --json`` prints; stable field names."""

    run_id: str
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    ignored: int = 0
    records: int = 0
    messages: int = 0
    seconds: float = 0.0
    items: list[ItemResult] = field(default_factory=list)

    def add(self, item: ItemResult) -> None:
        self.items.append(item)
        if item.outcome == "stored":
            self.stored += 1
            self.records += item.records
            self.messages += item.messages
        elif item.outcome == "duplicate":
            self.duplicates += 1
        elif item.outcome == "rejected":
            self.rejected += 1
        else:
            self.ignored += 1

    @property
    def exit_code(self) -> int:
        return 3 if self.rejected else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": [
                {"input": _display(i), "reason": i.reason}
                for i in self.items
                if i.outcome == "rejected"
            ],
            "ignored": [
                {"input": _display(i), "kind": i.kind, "reason": i.reason}
                for i in self.items
                if i.outcome == "ignored"
            ],
            "records": self.records,
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
        }


def _display(item: ItemResult) -> str:
    return f"{item.origin} [{item.member}]" if item.member else item.origin
