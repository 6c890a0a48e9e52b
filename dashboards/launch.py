"""How the dashboard's Streamlit server is started: one list of options for every launcher.

`dmarclens dashboard`, the browser tests and scripts/screenshots.py all start
Streamlit with these options, so what the tests photograph is what users get.
They are command-line flags rather than a `.streamlit/config.toml` because
Streamlit reads that file from the current directory, not from the app's.
No streamlit import here (the CLI imports this module).
"""

from __future__ import annotations

import sys
from pathlib import Path

ACCENT = "#1f4e79"

APP_OPTIONS: list[str] = [
    "--browser.gatherUsageStats", "false",  # no telemetry
    "--server.fileWatcherType", "none",
    "--server.enableStaticServing", "true",  # serves dashboards/static/ (the offline world map)
    "--client.toolbarMode", "minimal",  # no "Deploy" button
    "--theme.base", "light",
    "--theme.primaryColor", ACCENT,  # progress bars and selections in blue, not alarm red
]  # fmt: skip


def app_path() -> Path:
    """The entry point file (inside the installed package)."""
    return Path(__file__).resolve().parent / "app.py"


def streamlit_command(host: str, port: int, *, headless: bool = True) -> list[str]:
    """The full command line `dmarclens dashboard` runs."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path()),
        "--server.address", host, "--server.port", str(port),
        "--server.headless", "true" if headless else "false",
        *APP_OPTIONS,
    ]  # fmt: skip
