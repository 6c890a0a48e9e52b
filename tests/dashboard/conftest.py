"""Databases for the dashboard tests, built from dmarclens' own report generator.

``known_db``: a small world whose every number is written down here, so page
tests can assert exact metrics and table contents. ``hostile_db``: one report
whose free-text fields carry HTML, markdown links and ``javascript:`` URLs.
Both are ingested through the real pipeline into real DuckDB files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from dmarclens.generator import (
    DkimAuth,
    OverrideReason,
    PolicySpec,
    RecordSpec,
    ReportSpec,
    SpfAuth,
    render_report,
)

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboards" / "app.py"
FIRST_DAY = date(2026, 10, 1)
DAYS = 15  # enough for a readiness verdict (it wants 14 days of reports)

MS_IP = "40.107.22.10"  # Microsoft 365 (authorised, always passes)
MS_IP_BETA = "40.107.22.11"
SENDGRID_IP = "149.72.160.17"  # authorised ESP whose DKIM breaks for 5 of its 20 daily messages
SPOOF_IP = "203.0.113.66"  # spoofer, fails, receivers take no action (p=none)
FORWARDER_IP = "192.0.2.25"  # a mailing list: fails, receivers override as forwarded
BETA_SPOOF_IP = "198.51.100.7"  # spoofer against beta.example, rejected (p=reject)


@dataclass(frozen=True)
class Known:
    """What the known world contains, for assertions."""

    alpha_messages: int = DAYS * (100 + 20 + 7 + 4 + 10)
    alpha_passed: int = DAYS * (100 + 15 + 10)
    beta_messages: int = DAYS * (50 + 3)
    beta_passed: int = DAYS * 50
    reports: int = DAYS * 3
    last_day: date = FIRST_DAY + timedelta(days=DAYS - 1)

    @property
    def messages(self) -> int:
        return self.alpha_messages + self.beta_messages

    @property
    def passed(self) -> int:
        return self.alpha_passed + self.beta_passed


KNOWN = Known()


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _pass(ip: str, count: int, domain: str, selector: str = "selector1") -> RecordSpec:
    return RecordSpec(source_ip=ip, count=count, header_from=domain, envelope_from=domain,
                      dkim=(DkimAuth(domain, selector, "pass"),), spf=(SpfAuth(domain, "pass"),))


def known_specs() -> list[ReportSpec]:
    """Ten days, two domains, two reporters; every count fixed."""
    specs: list[ReportSpec] = []
    for i in range(DAYS):
        day = FIRST_DAY + timedelta(days=i)
        begin = _epoch(day)
        alpha = [
            _pass(MS_IP, 100, "alpha.example"),
            _pass(SENDGRID_IP, 15, "alpha.example", "s1"),
            RecordSpec(source_ip=SENDGRID_IP, count=5, header_from="alpha.example", envelope_from="em.sendgrid.net",
                       dkim_eval="fail", spf_eval="fail", dkim=(DkimAuth("sendgrid.net", "smtpapi", "pass"),),
                       spf=(SpfAuth("em.sendgrid.net", "pass"),)),
            RecordSpec(source_ip=SPOOF_IP, count=7, header_from="alpha.example", envelope_from="bad.example",
                       dkim_eval="fail", spf_eval="fail", spf=(SpfAuth("bad.example", "fail"),)),
            RecordSpec(source_ip=FORWARDER_IP, count=4, header_from="alpha.example", envelope_from="lists.example",
                       dkim_eval="fail", spf_eval="fail", reasons=(OverrideReason("mailing_list", "list"),),
                       dkim=(DkimAuth("alpha.example", "selector1", "fail"),),
                       spf=(SpfAuth("lists.example", "pass"),)),
        ]
        specs.append(ReportSpec(
            org_name="google.com", email="noreply-dmarc-support@google.com", report_id=f"g-alpha-{i}",
            begin=begin, end=begin + 86399, policy=PolicySpec("alpha.example", p="none"), records=alpha,
            receiver="google.com",
        ))
        specs.append(ReportSpec(
            org_name="Mail Receiver Inc", email="dmarc@receiver.example", report_id=f"m-alpha-{i}",
            begin=begin, end=begin + 86399, policy=PolicySpec("alpha.example", p="none"),
            records=[_pass(MS_IP, 10, "alpha.example")], receiver="receiver.example",
        ))
        beta = [
            _pass(MS_IP_BETA, 50, "beta.example"),
            RecordSpec(source_ip=BETA_SPOOF_IP, count=3, header_from="beta.example", envelope_from="beta.example",
                       disposition="reject", dkim_eval="fail", spf_eval="fail",
                       spf=(SpfAuth("beta.example", "fail"),)),
        ]
        specs.append(ReportSpec(
            org_name="google.com", email="noreply-dmarc-support@google.com", report_id=f"g-beta-{i}",
            begin=begin, end=begin + 86399, policy=PolicySpec("beta.example", p="reject"), records=beta,
            receiver="google.com",
        ))
    return specs


HOSTILE_ORG = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">Evil Corp'
HOSTILE_ID = "[click me](javascript:window.__pwned=3) **bold** <b>id</b>"
HOSTILE_COMMENT = '<img src=x onerror="window.__pwned=4"> [docs](javascript:alert(1)) =HYPERLINK("http://x")'
HOSTILE_ENVELOPE = "javascript:alert(1)//<svg onload=window.__pwned=5>"
HOSTILE_IP = "203.0.113.99"


def hostile_spec() -> ReportSpec:
    """One report whose every free-text field is an attack on the page that shows it."""
    begin = _epoch(FIRST_DAY)
    return ReportSpec(
        org_name=HOSTILE_ORG, email="x@evil.example", report_id=HOSTILE_ID, begin=begin, end=begin + 86399,
        policy=PolicySpec("alpha.example", p="none"), receiver="evil.example",
        extra_contact_info='<a href="javascript:window.__pwned=6">contact</a>',
        records=[RecordSpec(
            source_ip=HOSTILE_IP, count=9, header_from="alpha.example", envelope_from=HOSTILE_ENVELOPE,
            dkim_eval="fail", spf_eval="fail", reasons=(OverrideReason("local_policy", HOSTILE_COMMENT),),
            dkim=(DkimAuth("evil.example", "<i>sel</i>", "fail"),), spf=(SpfAuth(HOSTILE_ENVELOPE, "fail"),),
        )],
    )


def write_reports(folder: Path, specs: list[ReportSpec]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n, spec in enumerate(specs):
        (folder / f"{n:03d}-{spec.report_id[:8].replace('/', '_')}.xml".replace(" ", "_")).write_bytes(
            render_report(spec)
        )
    return folder


def ingest(folder: Path, db: Path) -> None:
    from dmarclens.ingest.writer import ingest_paths

    ingest_paths([folder], db)


@pytest.fixture(scope="session")
def known_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The known world plus one unparseable file (so Ingest health has a rejection)."""
    root = tmp_path_factory.mktemp("known")
    folder = write_reports(root / "reports", known_specs())
    (folder / "broken.xml").write_bytes(b"<feedback><report_metadata><org_name>trunc")
    db = root / "known.duckdb"
    ingest(folder, db)
    return db


@pytest.fixture
def known_db(known_db_template: Path, tmp_path: Path) -> Path:
    """A private copy per test (the Anomalies test writes to it)."""
    target = tmp_path / "known.duckdb"
    shutil.copy(known_db_template, target)
    return target


@pytest.fixture(scope="session")
def hostile_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    folder = write_reports(root / "reports", [*known_specs()[:3], hostile_spec()])
    db = root / "hostile.duckdb"
    ingest(folder, db)
    return db


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Point the in-process app (AppTest) at a database, with no config or password around."""

    def use(db: Path) -> None:
        monkeypatch.setenv("DMARCLENS_DB", str(db))
        monkeypatch.delenv("DMARCLENS_CONFIG", raising=False)
        monkeypatch.delenv("DMARCLENS_DOMAINS", raising=False)
        monkeypatch.delenv("DMARCLENS_DASHBOARD_PASSWORD_HASH", raising=False)
        monkeypatch.chdir(db.parent)  # no stray ./dmarclens.toml

    return use


@pytest.fixture
def run_page(app_env: Callable[[Path], None]) -> Iterator[Callable[..., object]]:
    """``run_page(db, "sources", ip="...")`` → a finished AppTest on that page."""
    from streamlit.testing.v1 import AppTest

    def run(db: Path, page: str | None = None, **params: str) -> AppTest:
        app_env(db)
        at = AppTest.from_file(str(APP), default_timeout=60)
        for k, v in params.items():
            at.query_params[k] = v
        if page:
            at.switch_page(f"views/{page}.py")
        return at.run()

    yield run
