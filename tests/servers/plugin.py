"""pytest fixtures that start real servers for dmarclens tests.

Load them from ``tests/conftest.py`` with::

    pytest_plugins = ["tests.servers.plugin"]

(``tests`` must be importable: keep a ``tests/__init__.py`` or set
``pythonpath = ["."]`` in ``[tool.pytest.ini_options]``.)

Why these exist: the project's rule is that tests talk to real components
(Dovecot, Chromium, aiosmtpd, a dnslib server, an HTTP receiver) that the
tests start themselves. Expensive servers (Dovecot, Chromium) are
session-scoped and isolated per test by other means (a fresh IMAP user, a
fresh browser context); cheap ones are function-scoped. A missing system
package makes the test *fail* with the install command, never skip: CI
installs them with ``scripts/install-test-deps.sh``.

Fixtures:
    dovecot, dovecot_no_move      session ``Dovecot`` (the latter without MOVE)
    dovecot_factory               function: ``make(**Dovecot kwargs) -> started Dovecot`` (kill/restart tests)
    imap_account                  function: ``ImapAccount(server, user, password)`` on ``dovecot``
    imap_account_no_move          function: same on ``dovecot_no_move``
    dns_server                    function: started ``DNSServer`` with an empty ``Zone``
    smtp_server                   function: started plain ``SMTPServer``
    smtp_server_factory           function: ``make(starttls=..., users=..., require_auth=...)``
    webhook_server                function: started ``WebhookServer``
    browser                       session Playwright ``Browser`` (Debian Chromium)
    page                          function Playwright ``Page`` (1400×1000) with ``console_errors``/``page_errors``
    streamlit_server_factory      function: ``make(app_path, env=..., args=...) -> started StreamlitServer``
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from .browser import CHROMIUM_PATH, launch_chromium, new_page
from .browser import INSTALL_HINT as CHROMIUM_HINT
from .browser import installed as chromium_installed
from .dns import DNSServer
from .dovecot import CAPABILITIES_WITHOUT_MOVE, Dovecot, find_dovecot
from .dovecot import INSTALL_HINT as DOVECOT_HINT
from .smtp import SMTPServer
from .streamlit_app import StreamlitServer
from .webhook import WebhookServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers the fixtures add, so ``--strict-markers`` accepts them."""
    config.addinivalue_line("markers", "imap: needs Dovecot")
    config.addinivalue_line("markers", "browser: needs headless Chromium")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the servers they use, so ``-m "not browser"`` works without hand-written marks."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"dovecot", "dovecot_no_move", "dovecot_factory", "imap_account", "imap_account_no_move"}:
            item.add_marker(pytest.mark.imap)
        if names & {"browser", "page"}:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Remember each phase's report so fixtures can tell, at teardown, whether the test failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(r.failed for r in reports.values())


# ---------------------------------------------------------------- IMAP (Dovecot)
class ImapAccount(NamedTuple):
    """A fresh IMAP user on a running Dovecot; unpacks as ``(server, user, password)``."""

    server: Dovecot
    user: str
    password: str

    @property
    def host(self) -> str:
        """Always 127.0.0.1."""
        return self.server.host

    @property
    def port(self) -> int:
        """Plain/STARTTLS port."""
        return self.server.imap_port

    @property
    def imaps_port(self) -> int:
        """Implicit-TLS port."""
        return self.server.imaps_port

    @property
    def ca_file(self) -> Path:
        """Certificate to trust when verifying the server."""
        return self.server.ca_file


def _start_dovecot(**kwargs: Any) -> Dovecot:
    if find_dovecot() is None:  # fail, never skip: CI must have it
        pytest.fail(f"dovecot is not installed: {DOVECOT_HINT}", pytrace=False)
    server = Dovecot(**kwargs)
    try:
        return server.start()
    except BaseException:
        server.close()
        raise


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One Dovecot for the session (IMAP + IMAPS + XOAUTH2). Isolate tests with ``imap_account``.

    Do not ``kill()``/``stop()`` it in a test; use ``dovecot_factory`` for that.
    """
    server = _start_dovecot(name="dovecot")
    try:
        yield server
    finally:
        server.close(graceful=False)


@pytest.fixture(scope="session")
def dovecot_no_move() -> Iterator[Dovecot]:
    """A session Dovecot that does not advertise MOVE, to test the COPY + EXPUNGE fallback."""
    server = _start_dovecot(name="dovecot-nomove", capabilities=CAPABILITIES_WITHOUT_MOVE)
    try:
        yield server
    finally:
        server.close(graceful=False)


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., Dovecot]]:
    """Start private Dovecots (``make(capabilities=..., oauth2=...)``) that a test may kill or restart.

    All are stopped and deleted at teardown.
    """
    servers: list[Dovecot] = []

    def make(**kwargs: Any) -> Dovecot:
        server = _start_dovecot(**kwargs)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.close(graceful=False)


def _user_prefix(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:24] or "user"


def _account(server: Dovecot, request: pytest.FixtureRequest) -> ImapAccount:
    if not server.is_running:  # self-heal if an earlier test stopped the shared server
        server.start()
    user, password = server.new_user(_user_prefix(request))
    return ImapAccount(server, user, password)


@pytest.fixture
def imap_account(dovecot: Dovecot, request: pytest.FixtureRequest) -> Iterator[ImapAccount]:
    """A brand-new user (unique name, own empty mailbox) on the session Dovecot."""
    account = _account(dovecot, request)
    try:
        yield account
    finally:
        if dovecot.oauth is not None:  # tokens a test issued for this user die with it
            for token, user in list(dovecot.oauth.tokens.items()):
                if user == account.user:
                    dovecot.revoke_token(token)


@pytest.fixture
def imap_account_no_move(dovecot_no_move: Dovecot, request: pytest.FixtureRequest) -> ImapAccount:
    """A brand-new user on the Dovecot that does not advertise MOVE."""
    return _account(dovecot_no_move, request)


# ---------------------------------------------------------------- DNS, SMTP, webhook
@pytest.fixture
def dns_server() -> Iterator[DNSServer]:
    """A started authoritative DNS server with an empty zone: fill ``dns_server.zone``."""
    with DNSServer() as server:
        yield server


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A started plain SMTP server (no TLS, no AUTH) collecting ``messages``."""
    with SMTPServer() as server:
        yield server


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPServer]]:
    """Start SMTP servers with options: ``make(starttls=True, users={"u": "p"}, require_auth=True)``."""
    servers: list[SMTPServer] = []

    def make(**kwargs: Any) -> SMTPServer:
        server = SMTPServer(**kwargs).start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    """A started HTTP receiver recording ``requests``; set ``status`` / ``queue_statuses`` / ``delay``."""
    with WebhookServer() as server:
        yield server


# ---------------------------------------------------------------- browser, Streamlit
@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium via Playwright for the whole session."""
    if not chromium_installed():  # fail, never skip: CI must have it
        pytest.fail(f"{CHROMIUM_PATH} not found: {CHROMIUM_HINT}", pytrace=False)
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        b = launch_chromium(pw)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh 1400×1000 page in its own context; ``page.console_errors`` / ``page.page_errors`` list errors.

    If the test fails, a screenshot is saved and its path shown in the report.
    """
    context, pg = new_page(browser)
    try:
        yield pg
    finally:
        if _failed(request):
            with contextlib.suppress(Exception):
                out = Path(tempfile.gettempdir()) / "dmarclens-test-artifacts"
                out.mkdir(exist_ok=True)
                shot = out / (re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:] + ".png")
                pg.screenshot(path=str(shot), full_page=True)
                request.node.add_report_section(
                    "teardown",
                    "browser",
                    f"screenshot: {shot}\nurl: {pg.url}\nconsole errors: {pg.console_errors}\n"  # type: ignore[attr-defined]
                    f"page errors: {pg.page_errors}",  # type: ignore[attr-defined]
                )
        context.close()


@pytest.fixture
def streamlit_server_factory(tmp_path: Path) -> Iterator[Callable[..., StreamlitServer]]:
    """Start Streamlit apps: ``make(app_path, env={...}, args=[...]) -> StreamlitServer`` (stopped at teardown).

    Logs go to ``tmp_path/streamlit-N.log`` unless ``log_path`` is given.
    """
    servers: list[StreamlitServer] = []

    def make(app_path: str | Path, **kwargs: Any) -> StreamlitServer:
        kwargs.setdefault("log_path", tmp_path / f"streamlit-{len(servers) + 1}.log")
        server = StreamlitServer(app_path, **kwargs)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
