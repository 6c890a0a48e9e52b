"""Headless Debian Chromium driven by Playwright for Python.

Why Debian's Chromium: ``playwright install`` downloads a browser from a CDN
that CI cannot reach, so we point Playwright at ``/usr/lib/chromium/chromium``
from the ``chromium`` apt package (scripts/install-test-deps.sh installs it). The flags
switch off every background network call so tests stay offline and quiet.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright

#: Debian's real binary (``/usr/bin/chromium`` is a shell wrapper that prints a warning).
#: ``DMARCLENS_CHROMIUM`` overrides it, e.g. on a developer machine with another distribution.
CHROMIUM_PATH = Path(os.environ.get("DMARCLENS_CHROMIUM", "/usr/lib/chromium/chromium"))
INSTALL_HINT = "run `sudo scripts/install-test-deps.sh` (CI runs it) to install Debian's chromium"

CHROMIUM_ARGS: list[str] = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

VIEWPORT: dict[str, int] = {"width": 1400, "height": 1000}


class ChromiumNotInstalled(RuntimeError):
    """Raised when Debian's Chromium binary is missing, with the command that installs it."""


def installed() -> bool:
    """True if the Chromium binary exists and is executable."""
    return CHROMIUM_PATH.is_file() and os.access(CHROMIUM_PATH, os.X_OK)


def chromium_path() -> Path:
    """The Chromium binary to use; raises ``ChromiumNotInstalled`` if absent."""
    if not installed():
        raise ChromiumNotInstalled(f"{CHROMIUM_PATH} not found: {INSTALL_HINT}")
    return CHROMIUM_PATH


def launch_chromium(playwright: Playwright, **kwargs: Any) -> Browser:
    """Launch headless Debian Chromium with the offline flags (never ``playwright install``)."""
    return playwright.chromium.launch(
        executable_path=str(chromium_path()),
        args=CHROMIUM_ARGS,
        headless=True,
        timeout=30_000,
        **kwargs,
    )


def new_page(browser: Browser, *, timeout_ms: float = 15_000) -> tuple[BrowserContext, Page]:
    """A fresh context (own cookies, 1400×1000 viewport) and page that records browser-side errors.

    The page gets two list attributes: ``console_errors`` (console messages
    of type ``error``) and ``page_errors`` (uncaught exceptions). A test can
    assert both are empty to catch broken front-end code.
    """
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(timeout_ms)
    page = context.new_page()
    console_errors: list[str] = []
    page_errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            console_errors.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.console_errors = console_errors  # type: ignore[attr-defined]
    page.page_errors = page_errors  # type: ignore[attr-defined]
    return context, page
