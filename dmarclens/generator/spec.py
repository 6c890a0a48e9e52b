"""Plain data describing one aggregate report, before it becomes XML.

The generator keeps *what a report says* (these dataclasses) apart from *how
it is written* (``xmlgen``: dialect and quirks) and *how it travels*
(``wrappers``: gzip, zip, mail, mbox). Tests and benchmarks can then build one
report and render it every way a real receiver would, and assert on the spec
instead of re-parsing their own fixtures.

Values are kept as the strings that appear in the XML (``"pass"``,
``"none"``...) so a spec can also describe wrong or odd input on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

ReportFormat = Literal["rfc7489", "rfc9990", "draft"]
"""XML dialects: RFC 7489 appendix C, RFC 9990 (dmarc-2.0 namespace), and the
older draft schema published on the DMARC wiki (still found in archives)."""

RFC9990_NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"
FORMATS: tuple[ReportFormat, ...] = ("rfc7489", "rfc9990", "draft")


@dataclass(frozen=True)
class DkimAuth:
    """One DKIM signature result (``auth_results/dkim``), uninterpreted by DMARC."""

    domain: str
    selector: str | None = None
    result: str = "pass"
    human_result: str | None = None


@dataclass(frozen=True)
class SpfAuth:
    """One SPF result (``auth_results/spf``); ``scope`` is ``mfrom`` or ``helo``."""

    domain: str
    result: str = "pass"
    scope: str | None = "mfrom"
    human_result: str | None = None


@dataclass(frozen=True)
class OverrideReason:
    """A ``policy_evaluated/reason``: why the receiver did not apply the policy."""

    type: str
    comment: str | None = None


@dataclass(frozen=True)
class RecordSpec:
    """One ``<record>``: a source IP, a message count and what the receiver saw.

    ``label`` is never rendered. It names the simulated sender that produced
    the row (``"m365"``, ``"spoof-noise"``, ``"story:m365-burst"``...) so
    detection benchmarks have ground truth for every row they ingest.
    """

    source_ip: str
    count: int
    header_from: str
    disposition: str = "none"
    dkim_eval: str = "pass"  # policy_evaluated/dkim: aligned DKIM pass?
    spf_eval: str = "pass"  # policy_evaluated/spf: aligned SPF pass?
    envelope_from: str | None = None
    envelope_to: str | None = None
    dkim: tuple[DkimAuth, ...] = ()
    spf: tuple[SpfAuth, ...] = ()
    reasons: tuple[OverrideReason, ...] = ()
    label: str = ""

    @property
    def dmarc_pass(self) -> bool:
        """DMARC passes when either aligned mechanism passed."""
        return self.dkim_eval.lower() == "pass" or self.spf_eval.lower() == "pass"

    def merge_key(self) -> tuple[object, ...]:
        """Everything except the count: rows with equal keys are one record."""
        return (
            self.source_ip,
            self.header_from,
            self.disposition,
            self.dkim_eval,
            self.spf_eval,
            self.envelope_from,
            self.envelope_to,
            self.dkim,
            self.spf,
            self.reasons,
            self.label,
        )


@dataclass(frozen=True)
class PolicySpec:
    """``policy_published``: the DMARC record the receiver found.

    Fields set to ``None`` are left out of the XML; which fields a dialect can
    carry at all is decided by the renderer (no ``pct`` in RFC 9990, no
    ``np``/``testing``/``discovery_method`` in RFC 7489).
    """

    domain: str
    p: str = "none"
    sp: str | None = None
    pct: int | None = 100
    adkim: str | None = "r"
    aspf: str | None = "r"
    fo: str | None = None
    np: str | None = None
    testing: str | None = None
    discovery_method: str | None = None


@dataclass(frozen=True)
class Quirks:
    """Oddities seen in real reports, switchable one by one for tests.

    Each one is something a strict parser chokes on; keeping them as flags
    lets a hostile-input test turn on exactly one and name it.
    """

    no_xml_declaration: bool = False
    capitalized_results: bool = False  # "Pass", "None", "Fail" in results/dispositions
    empty_reason: bool = False  # an empty <reason/> in the first record
    empty_org_name: bool = False  # <org_name></org_name>: fall back to the mail sender
    cp1252_byte: bool = False  # Windows-1252 curly quotes (0x93/0x94) in a comment field
    xs_schema_wrapper: bool = False  # report wrapped in <xs:schema ...>...</xs:schema>
    no_namespace: bool = False  # RFC 9990 shape with <version>2.0</version> but no xmlns

    def any(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)

    def names(self) -> list[str]:
        """The quirks switched on, for file names and README tables."""
        return [name for name in self.__dataclass_fields__ if getattr(self, name)]


NO_QUIRKS = Quirks()


@dataclass
class ReportSpec:
    """One aggregate report: metadata, published policy and records.

    ``receiver`` is the reporting domain used in file names and mail subjects
    (``google.com``, ``enterprise.protection.outlook.com``); ``reporter`` is
    the world's short key for the reporter that made it. The presentation
    fields (``xml_declaration``, ``root_attrs``, ``indent``, ``version``)
    let each simulated receiver keep its own look.
    """

    org_name: str
    email: str
    report_id: str
    begin: int  # epoch seconds, UTC
    end: int
    policy: PolicySpec
    records: list[RecordSpec]
    receiver: str
    fmt: ReportFormat = "rfc7489"
    quirks: Quirks = NO_QUIRKS
    extra_contact_info: str | None = None
    errors: tuple[str, ...] = ()
    generator: str | None = None  # RFC 9990 <generator>
    version: str | None = None  # <version> text; None = dialect default
    xml_declaration: str = '<?xml version="1.0" encoding="UTF-8"?>'
    root_attrs: tuple[tuple[str, str], ...] = ()
    indent: str = "  "  # "" writes the whole report on one line
    reporter: str = ""
    tags: tuple[str, ...] = field(default=())  # free labels, e.g. ("duplicate",)

    @property
    def domain(self) -> str:
        return self.policy.domain

    @property
    def messages(self) -> int:
        return sum(r.count for r in self.records)

    def with_quirks(self, **flags: bool) -> ReportSpec:
        """A copy with some quirks switched on (the rest kept)."""
        return replace(self, quirks=replace(self.quirks, **flags))
