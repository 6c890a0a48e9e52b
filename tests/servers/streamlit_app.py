"""Run a Streamlit app as a real server process, and wait on it from Playwright.

Why a real process: ``AppTest`` checks page logic, but what a person sees
(charts drawn, no exception boxes, no console errors) needs the real server
and a real browser. The server is started exactly as a user would start it,
health-checked on ``/_stcore/health``, and its output goes to a log file that
is quoted in any start-up error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .ports import LOCALHOST, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Page

APP_SELECTOR = '[data-testid="stApp"]'
STATUS_WIDGET = '[data-testid="stStatusWidget"]'
EXCEPTION = '[data-testid="stException"]'
PLOTLY_CHART = '[data-testid="stPlotlyChart"]'


class StreamlitStartError(RuntimeError):
    """Raised when the Streamlit server did not become healthy; carries the log tail."""


class StreamlitServer:
    """``python -m streamlit run APP`` on 127.0.0.1:``port``, headless and offline.

    ``env`` is added to the current environment (e.g. ``{"DMARCLENS_DB": path}``);
    ``args`` go after ``--`` to the app's ``sys.argv``; ``streamlit_options``
    are extra ``--name value`` flags for Streamlit itself. Attributes:
    ``url``, ``port``, ``log_path``, ``process``.
    """

    def __init__(
        self,
        app_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        *,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        streamlit_options: Sequence[str] = (),
    ) -> None:
        self.app_path = Path(app_path)
        self.env = dict(env or {})
        self.args = list(args)
        self.port = port or free_port()
        self._auto_port = port is None
        self.host = LOCALHOST
        self.cwd = Path(cwd) if cwd else None
        self.streamlit_options = list(streamlit_options)
        self._own_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="dmarclens-streamlit-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the app, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The exact command line used to start the server."""
        cmd = [
            sys.executable, "-m", "streamlit", "run", str(self.app_path),
            "--server.headless", "true",
            "--server.address", self.host,
            "--server.port", str(self.port),
            "--browser.gatherUsageStats", "false",
            # No file watcher: no inotify cost and no surprise reruns while a test runs.
            "--server.fileWatcherType", "none",
            *self.streamlit_options,
        ]  # fmt: skip
        if self.args:
            cmd += ["--", *self.args]
        return cmd

    def log_text(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def _health(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as resp:
                return resp.status == 200 and resp.read().strip() == b"ok"
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 60.0) -> StreamlitServer:
        """Start the server; return when ``/_stcore/health`` answers ``ok``."""
        if self.process is not None and self.process.poll() is None:
            return self
        if not self.app_path.is_file():
            raise FileNotFoundError(f"Streamlit app not found: {self.app_path}")
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except StreamlitStartError as e:
                if "is not available" not in str(e) or not self._auto_port or attempt == 2:
                    raise
                self.port = free_port()  # taken since we picked it: try another
        return self

    def _start_once(self, timeout: float) -> StreamlitServer:
        env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,  # own process group, killed as a whole in stop()
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        try:
            while not self._health():
                if self.process.poll() is not None:
                    raise StreamlitStartError(
                        f"streamlit exited with code {self.process.returncode} before becoming healthy\n"
                        + self._tail()
                    )
                if time.monotonic() > deadline:
                    raise StreamlitStartError(
                        f"streamlit not healthy after {timeout:.0f}s at {self.url}\n" + self._tail()
                    )
                time.sleep(0.1)
            if self.process.poll() is not None:  # "healthy" was another server on our port
                raise StreamlitStartError(
                    f"streamlit exited with code {self.process.returncode} while starting\n" + self._tail()
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _tail(self, lines: int = 40) -> str:
        return f"--- {self.log_path} (tail) ---\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it if still alive after ``timeout``."""
        proc = self.process
        if proc is None:
            return
        try:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self.process = None

    def close(self) -> None:
        """Stop the server and delete the log file if we created it (start errors already quote it)."""
        self.stop()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> StreamlitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StreamlitServer {self.app_path} at {self.url}>"


def wait_for_app_idle(page: Page, timeout: float = 30.0) -> None:
    """Wait until the app is connected and its script run has finished.

    Streamlit marks the root element with ``data-test-connection-state`` and
    ``data-test-script-state``; the run is over when the state is
    ``notRunning`` (or ``compilationError``) and the "Running…" status widget
    is gone. A short settle check catches a rerun that starts right after.
    """
    ms = timeout * 1000
    page.wait_for_selector(f'{APP_SELECTOR}[data-test-connection-state="CONNECTED"]', timeout=ms)
    done = (
        f'{APP_SELECTOR}[data-test-script-state="notRunning"], '
        f'{APP_SELECTOR}[data-test-script-state="compilationError"]'
    )
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.1, deadline - time.monotonic()) * 1000
        page.wait_for_selector(done, timeout=left)
        page.wait_for_selector(STATUS_WIDGET, state="detached", timeout=left)
        page.wait_for_timeout(150)
        if page.locator(done).count() and not page.locator(STATUS_WIDGET).count():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Streamlit app still running after {timeout:.0f}s")


def wait_for_plotly(page: Page, count: int = 1, timeout: float = 30.0) -> None:
    """Wait until at least ``count`` plotly charts are drawn (SVG with traces present).

    A chart counts as drawn when plotly has laid it out (``_fullLayout``)
    and its ``.main-svg`` holds at least one trace, slice or heatmap layer.
    """
    page.wait_for_function(
        """([sel, count]) => {
            const charts = Array.from(document.querySelectorAll(sel + ' .js-plotly-plot'));
            const drawn = charts.filter(el => el._fullLayout && el.querySelector('.main-svg') &&
                el.querySelector('.main-svg .trace, .main-svg .slice, .main-svg .hm, .main-svg .choroplethlocation, .main-svg image'));
            return drawn.length >= count;
        }""",
        arg=[PLOTLY_CHART, count],
        timeout=timeout * 1000,
    )


def exceptions(page: Page) -> list[str]:
    """Texts of all Streamlit exception boxes on the page (empty list when the app is healthy)."""
    return page.locator(EXCEPTION).all_inner_texts()
