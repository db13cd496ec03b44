"""The lab app: `streamlit run lab_app/app.py` (what `make lab` starts).

An `st.navigation` entry point: the sidebar (sweep launcher + live queue) is drawn here, so it is
on every page and keeps its state across pages. Jobs run in worker processes, never in this script.
"""

from __future__ import annotations

import streamlit as st

from lab_app import data, nav, sidebar

st.set_page_config(page_title="SAE lab", page_icon=":material/biotech:", layout="wide")

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
