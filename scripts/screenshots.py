"""Refresh docs/screenshots/*.png: every dashboard page at 1400×1000 in Debian Chromium.

Why a script: the README links these images, and they must show the pages as
they are now. It builds the demo database from the project's own generator
(or uses --db), runs detection when the detector is installed, starts the
real Streamlit server and photographs each page once its charts are drawn.

Example:
    python scripts/screenshots.py                 # fresh demo data → docs/screenshots/
    python scripts/screenshots.py --db reports.duckdb --out /tmp/shots
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dashboards.launch import APP_OPTIONS  # noqa: E402
from tests.servers.browser import launch_chromium, new_page  # noqa: E402
from tests.servers.streamlit_app import StreamlitServer, exceptions, wait_for_app_idle, wait_for_plotly  # noqa: E402

# (file name, URL path and query, charts to wait for)
PAGES: list[tuple[str, str, int]] = [
    ("overview", "", 2),
    ("sources", "sources", 2),
    ("anomalies", "anomalies", 1),
    ("readiness", "readiness", 1),
    ("reports", "reports", 1),
    ("ingest", "ingest", 0),
]


def build_demo_db(folder: Path) -> Path:
    """Generate the sample reports, ingest them, and run detection when available."""
    from dmarclens.generator import write_samples
    from dmarclens.ingest.writer import ingest_paths

    samples = folder / "samples"
    write_samples(samples)
    db = folder / "demo.duckdb"
    ingest_paths([samples], db)
    try:
        from dmarclens.detect.run import detect_and_store  # type: ignore[import-not-found]
    except ImportError:
        return db
    detect_and_store(db)
    return db


def shoot(db: Path, out: Path, *, query: str = "") -> list[Path]:
    """Photograph every page of the dashboard running on ``db``; returns the files written."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    app = REPO / "dashboards" / "app.py"
    with StreamlitServer(app, env={"DMARCLENS_DB": str(db)}, cwd=REPO, streamlit_options=APP_OPTIONS) as server, sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            context, page = new_page(browser, timeout_ms=60_000)
            for name, path, charts in PAGES:
                page.goto(f"{server.url}/{path}{query}")
                wait_for_app_idle(page, timeout=60)
                if charts:
                    wait_for_plotly(page, count=charts, timeout=60)
                page.wait_for_timeout(600)  # let plotly finish its transitions
                errors = exceptions(page)
                if errors:
                    raise RuntimeError(f"page {name} shows an exception: {errors[0][:500]}")
                target = out / f"{name}.png"
                page.screenshot(path=str(target))
                written.append(target)
            context.close()
        finally:
            browser.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, help="database to show (default: fresh demo data)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmarclens-shots-") as tmp:
        db = args.db or build_demo_db(Path(tmp))
        for path in shoot(db, args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
