"""Lab notebook (home): where the lab stands — latest runs, headline numbers, best config, findings."""

from __future__ import annotations

import json

import streamlit as st

from core.errors import LabError
from lab_app import access, data, run_table
from lab_app.formulas import help_for

access.require()  # the access gate, before this page draws anything (why on every page: lab_app/access.py)

st.title("Lab notebook")

lab = data.lab_or_stop("This lab is empty. Run `make lab` (or `python -m engine run`) to fill it with the default "
                       "experiment, or launch a sweep from the sidebar.")
runs = data.runs(lab)
finished = runs[runs["status"] == "FINISHED"]
c = st.columns(4)
c[0].metric("Runs", len(runs), help="One run = one SAE trained on one domain.")
c[1].metric("Finished", len(finished))
c[2].metric("Running", int((runs["status"] == "RUNNING").sum()))
c[3].metric("Sweeps", len(data.sweeps(lab)))

if finished.empty:
    st.info("No finished runs yet: watch the queue in the sidebar.")
    st.stop()

latest = finished.iloc[0]
st.subheader(f"Latest: {latest['name'] or latest['run_id']}")
st.caption(f"run `{latest['run_id']}` · {latest['model']} · {latest['hook']} layer {latest['layer']} · "
           f"{latest['architecture']} k={latest['k']} d_sae={latest['d_sae']} · "
           + (f"trained on {latest['train_domain']}" if not isinstance(latest["imported_from"], str) else
              f"imported from {latest['imported_from']} (metrics read on {latest['train_domain']})"))
m = st.columns(6)
for col, key, fmt in zip(m, ["fvu", "r2", "transfer_ratio", "l0", "dead_frac", "score"],
                         [".4f", ".3f", ".2f", ".1f", ".1%", ".2f"]):
    v = latest[key]
    col.metric({"fvu": "FVU", "r2": "R²", "transfer_ratio": "transfer ×", "l0": "L0", "dead_frac": "dead (held-out)",
                "score": "quality /5"}[key],
               "—" if v != v or v is None else format(v, fmt), help=help_for(key))
if latest["rating"] == latest["rating"] and latest["rating"]:
    st.caption(f"Quality rating: **{latest['rating']}** (≥ 4.5 Excellent, ≥ 3.5 Good, ≥ 2.5 Fair, else Poor)"
               + (f" · ground-truth concepts covered **{latest['concept_coverage']:.0%}**, "
                  f"1-latent probe {latest['probe_k1']:.2f} vs {latest['probe_k1_baseline']:.2f} on the model's own dims"
                  if latest["concept_coverage"] == latest["concept_coverage"] and latest["concept_coverage"] is not None
                  else ""))
q = data.quality(lab, latest["run_id"])
details = json.loads(q["details"]) if q and isinstance(q["details"], str) else (q or {}).get("details") or {}
for w in details.get("warnings") or []:
    st.warning(f"Not fit for interpretability, whatever the rating says: {w}.")

st.subheader("Latest runs")
run_table.show(runs.head(12), "home_runs", height="auto",
               default=["run_id", "fvu", "transfer_ratio", "l0", "dead_frac", "score", "status", "layer", "k", "d_sae",
                        "architecture", "trained_on", "ended_at"])
left, right = st.columns([1, 1])
with left:
    st.subheader("Best configuration so far")
    configs = data.configurations(lab, None)
    if configs.empty:
        st.caption("Needs finished, evaluated runs.")
    else:
        best = configs.sort_values("overall", ascending=False).iloc[0]
        st.metric("overall", f"{best['overall']:.3f}", help=help_for("overall"))
        st.markdown(f"**{best['hook']} layer {best['layer']}, {best['architecture']} k={best['k']}, d_sae={best['d_sae']}**  \n"
                    f"R² {best['r2']:.3f} · transfer ×{best['transfer_ratio']:.2f} · L0 {best['l0']:.1f} · "
                    f"{int(best['n_saes'])} SAE(s): {best['train_domains']}")
        st.page_link(data.page("runs"), label="Compare every configuration", icon=":material/timeline:")
with right:
    st.subheader("Recent findings")
    from findings import search_cards
    from findings.render import escape_markdown

    try:
        cards = sorted(search_cards(data.lab()), key=lambda c: c.updated_at, reverse=True)
    except LabError as e:
        st.caption(f"findings unavailable: {e}")
        cards = []
    if not cards:
        st.caption("No findings cards yet: label a feature in the inspector to start one.")
    for card in cards[:5]:
        st.page_link(data.page("findings"),
                     label=f"{escape_markdown(card.title, one_line=True)} — {card.status}, {card.confidence} confidence",
                     query_params={"card": card.card_id}, icon=":material/bookmark:")
