"""The Runs page's administration panel: mark a stuck RUNNING run failed, or delete a run.

Both act only after a confirmation (a checkbox naming the run) and go through the engine's own
``mark_failed`` / ``delete_run``, so the app refuses exactly what the CLI refuses (a run whose
process is alive, an unknown run) with the same one line.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.errors import LabError
from engine.run_admin import delete_run, mark_failed, run_info
from engine.run_owner import owner_alive, owner_of
from lab_app import data

FLASH = "run_admin_flash"


def _state(lab, run_id: str) -> str:
    """Who runs a RUNNING run, and whether that process is alive."""
    try:
        info = run_info(lab, run_id)
    except LabError as e:
        return str(e)
    if info is None or info["status"] != "RUNNING":
        return ""
    owner = owner_of(info)
    who = owner.describe() if owner else "the process that started it"
    alive = owner_alive(lab, run_id, owner)
    if alive:
        return f"Running in {who}, which is alive: stop that process first (or cancel its sweep job)."
    if alive is None:
        return f"Running in {who}, another machine: mark it failed there."
    return f"{who.capitalize()} is gone: nothing will end this run, so you can mark it failed."


def render(runs: pd.DataFrame) -> None:
    flash = st.session_state.pop(FLASH, None)
    if flash:
        st.success(flash)
    with st.expander("Mark a stuck run failed, or delete a run"):
        names = {r.run_id: f"{r.name or r.run_id} [{r.run_id[-6:]}] · {r.status}" for r in runs.itertuples()}
        rid = st.selectbox("Run", list(names), format_func=lambda r: names[r], key="admin_run")
        status = runs.loc[runs["run_id"] == rid, "status"].iloc[0]
        lab = data.lab()
        if status == "RUNNING":
            st.caption(_state(lab, rid))
        st.caption("Delete removes the run's rows in every table and its folder; findings cards that mention it keep "
                   "their frozen evidence. Neither can be undone.")
        sure = st.checkbox(f"Yes, act on run {rid}", key="admin_confirm")
        a, b = st.columns(2)
        if a.button("Mark failed", key="admin_mark_failed", disabled=not sure or status != "RUNNING"):
            _act(lambda: _mark_failed(lab, rid))
        if b.button("Delete run", key="admin_delete", type="primary", disabled=not sure):
            _act(lambda: _delete(lab, rid))


def _mark_failed(lab, rid: str) -> str:
    mark_failed(lab, rid)
    return f"Run {rid} marked FAILED."


def _delete(lab, rid: str) -> str:
    deleted = delete_run(lab, rid)
    return f"Run {rid} deleted ({sum(deleted.values())} rows and its folder)."


def _act(fn) -> None:
    try:
        message = fn()
    except LabError as e:
        st.error(str(e))
        return
    st.session_state[FLASH] = message
    st.session_state.pop("admin_confirm", None)
    data.clear()
    st.rerun()
