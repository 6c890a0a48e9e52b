"""A non-editable `pip install .` works from a clean venv, dashboards included.

The venv sees the machine's already-installed dependencies
(--system-site-packages) so the test does not download the world, but
dmarclens itself is built from the checkout into the venv and every command
runs from a folder outside the checkout, so nothing is borrowed from the
source tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True)
    res = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "--root-user-action=ignore", str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr
    return root


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMARCLENS_") and k != "PYTHONPATH"}
    return env


def test_installed_package_is_the_venv_copy(venv: Path, tmp_path: Path) -> None:
    code = "import dmarclens, dashboards, pathlib; print(dmarclens.__file__); print(dashboards.__file__)"
    res = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, check=True)
    for line in res.stdout.splitlines():
        assert line.startswith(str(venv)), f"imported from outside the venv: {line}"
    app = Path(res.stdout.splitlines()[1]).parent / "app.py"
    assert app.is_file(), "dashboards/app.py is not shipped in the wheel"
    schema = Path(res.stdout.splitlines()[0]).parent / "store" / "schema" / "0001_init.sql"
    assert schema.is_file(), "schema migrations are not shipped in the wheel"


def test_installed_cli_ingests_and_serves_the_dashboard(venv: Path, tmp_path: Path, samples_dir: Path) -> None:
    exe = str(venv / "bin" / "dmarclens")
    res = subprocess.run([exe, "--help"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0 and "ingest" in res.stdout
    db = tmp_path / "r.duckdb"
    res = subprocess.run([exe, "ingest", str(samples_dir), "--db", str(db), "--json"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    port = _free_port()
    proc = subprocess.Popen([exe, "dashboard", "--db", str(db), "--port", str(port)], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        body = b""
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.3)
        assert body == b"ok", (proc.poll(), proc.stdout.read() if proc.poll() is not None else "")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
