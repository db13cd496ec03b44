"""Choosing a run with a feature analysis; the choice follows ?run=… and is shared across pages."""

from __future__ import annotations

from typing import Any

import streamlit as st

from lab_app import data
from lab_app.run_table import short_names


def default_run(analysed) -> str:
    """The run a page opens on without a choice: the best analysed run the lab's own checks do not flag
    (a one-step toy run is usually the newest, and its map is noise): fewest quality warnings, then the
    quality score, then the newest."""
    scores = data.runs(data.lab())[["run_id", "score", "quality_warnings"]]
    ranked = analysed[["run_id", "created_at"]].merge(scores, on="run_id", how="left")
    ranked = ranked.assign(warnings=ranked["quality_warnings"].fillna(99), score=ranked["score"].fillna(-1.0))
    return str(ranked.sort_values(["warnings", "score", "created_at"], ascending=[True, False, False]).iloc[0]["run_id"])


def pick_analysed_run(key: str) -> tuple[str, dict[str, Any]]:
    lab = data.lab_or_stop()
    runs = data.analysed_runs(lab)
    wanted = st.query_params.get("run") or st.session_state.get("current_run")
    if wanted and wanted not in set(runs["run_id"]):
        # A link to a run analysed seconds ago (an import, a sweep job) met the few-seconds cache
        # from before it existed, and silently opened another run with the same feature number.
        data.clear()
        runs = data.analysed_runs(lab)
    if runs.empty:
        st.info("No run has a feature analysis yet. Runs are analysed after training; older ones with "
                "`python -m engine analyze --all`.")
        st.stop()
    ids = list(runs["run_id"])
    index = ids.index(wanted) if wanted in ids else ids.index(default_run(runs))
    every = data.runs(data.lab())
    short = dict(zip(every["run_id"], short_names(every)))
    names = {r.run_id: f"{short.get(r.run_id, r.name)} · L{r.layer} k={r.k} d_sae={r.d_sae} [{r.run_id[-6:]}]"
             for r in runs.itertuples()}
    run_id = st.selectbox("Run", ids, index=index, format_func=lambda r: names[r], key=f"{key}_run")
    st.session_state["current_run"] = run_id
    return run_id, runs[runs["run_id"] == run_id].iloc[0].to_dict()
