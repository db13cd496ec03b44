"""The lab app: `make lab` starts it (`python -m lab_app.serve`, which runs `streamlit run lab_app/app.py`).

An `st.navigation` entry point: the sidebar (sweep launcher + live queue) is drawn here, so it is
on every page and keeps its state across pages. Jobs run in worker processes, never in this script.
The access gate (lab_app/access.py) runs first, before any page or the sidebar draws.
"""

from __future__ import annotations

import streamlit as st

from lab_app import access, data, nav, sidebar

# An emoji favicon is drawn in the browser; a :material/…: one is fetched from fonts.gstatic.com.
st.set_page_config(page_title="SAE lab", page_icon="🔬", layout="wide")
access.require()

PAGES = nav.pages()

page = st.navigation({"Lab": [PAGES["home"], PAGES["runs"]],
                      "Features": [PAGES["map"], PAGES["inspector"], PAGES["probe"]],
                      "Notebook": [PAGES["findings"], PAGES["sql"]]})

# A deep link at the root (?run=…&feature=…) opens the inspector.
if page.title == PAGES["home"].title and "run" in st.query_params and "feature" in st.query_params:
    st.switch_page(PAGES["inspector"], query_params={"run": st.query_params["run"], "feature": st.query_params["feature"]})

data.ensure_schema_once()
data.warm_model_in_background()
sidebar.render()
page.run()
