"""The app's pages, built once per process and shared by app.py and every page link."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def pages() -> dict[str, st.Page]:
    p = HERE / "views"  # not "pages": Streamlit would serve a pages/ folder the pre-st.navigation way
    return {
        "home": st.Page(p / "notebook.py", title="Lab notebook", icon=":material/home:", url_path="notebook", default=True),
        "runs": st.Page(p / "runs.py", title="Runs", icon=":material/timeline:", url_path="runs"),
        "map": st.Page(p / "concept_map.py", title="Concept map", icon=":material/scatter_plot:", url_path="map"),
        "inspector": st.Page(p / "inspector.py", title="Feature inspector", icon=":material/search:", url_path="inspector"),
        "probe": st.Page(p / "probe.py", title="Text probe", icon=":material/text_fields:", url_path="probe"),
        "findings": st.Page(p / "findings.py", title="Findings", icon=":material/bookmarks:", url_path="findings"),
        "sql": st.Page(p / "sql.py", title="SQL", icon=":material/database:", url_path="sql"),
    }
