"""Entry point of the dmarclens dashboard (`dmarclens dashboard` runs this file).

Sets the page up, gates it behind the optional password, draws the shared
sidebar filters (bound to the URL), then hands over to the chosen page.
Reads DMARCLENS_DB from the environment; never writes except where the
Anomalies page records an acknowledgement.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# `streamlit run .../dashboards/app.py` puts dashboards/ itself on sys.path;
# the package's parent must be there too for `import dashboards.ui`.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from dashboards import auth, ui  # noqa: E402


def _favicon() -> PILImage:
    """A small shield drawn locally: a material-icon favicon would be fetched from Google's CDN."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(img).polygon([(32, 4), (58, 14), (54, 40), (32, 60), (10, 40), (6, 14)], fill="#1f4e79")
    ImageDraw.Draw(img).line([(20, 32), (29, 41), (45, 23)], fill="#ffffff", width=6)
    return img


st.set_page_config(page_title="dmarclens", page_icon=_favicon(), layout="wide", initial_sidebar_state="expanded")


def _settings_raw() -> tuple[dict, list[str]]:
    """Config file contents (for the password hash) and the configured domains."""
    from dmarclens.core.config import load_settings
    from dmarclens.core.errors import ConfigError

    try:
        settings = load_settings()
    except ConfigError as e:
        st.error(f"Configuration problem: {e}")
        st.stop()
    return settings.raw, list(settings.domains)


def _password_gate(stored_hash: str) -> None:
    """Stop the run until the visitor has typed the dashboard password (once per session)."""
    if st.session_state.get("_authenticated"):
        return
    st.title("dmarclens")
    st.caption("This dashboard is password-protected.")
    with st.form("login", width=420):
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        if auth.verify_password(password, stored_hash):
            st.session_state["_authenticated"] = True
            st.rerun()
        time.sleep(1.0)  # slow down guessing
        st.error("Wrong password.")
    st.stop()


raw, configured_domains = _settings_raw()
password_hash = auth.configured_hash(raw)
if password_hash:
    _password_gate(password_hash)

HERE = Path(__file__).resolve().parent
pages = {
    "Monitor": [
        st.Page(HERE / "views" / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page(HERE / "views" / "sources.py", title="Sources", icon=":material/dns:"),
        st.Page(HERE / "views" / "anomalies.py", title="Anomalies", icon=":material/crisis_alert:"),
    ],
    "Act": [
        st.Page(HERE / "views" / "readiness.py", title="Policy readiness", icon=":material/verified_user:"),
    ],
    "Data": [
        st.Page(HERE / "views" / "reports.py", title="Reports", icon=":material/description:"),
        st.Page(HERE / "views" / "ingest.py", title="Ingest health", icon=":material/monitor_heart:"),
    ],
}
page = st.navigation(pages)

st.session_state["_view"] = ui.sidebar_filters(configured_domains)
ui.auto_refresh_control()
with st.sidebar:
    st.caption("Database: " + ui.esc(ui.db_path().name) + " (opened read-only)")

page.run()
