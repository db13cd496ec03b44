"""Concept map: every feature of a run as a point (decoder row ⊕ selectivity stats, PCA, k-means).

Colour by cluster, class or selectivity; filter A-leaning / B-leaning / shared with your own
threshold; search labels and contexts; click a point (or pick a feature) to open the inspector.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from core.errors import LabError
from lab_app import access, charts, data
from lab_app.formulas import help_for
from lab_app.render import context_html, escape_markdown
from lab_app.run_picker import pick_analysed_run

access.require()  # the access gate, before this page draws anything (why on every page: lab_app/access.py)

st.title("Concept map")
run_id, info = pick_analysed_run("map")
if st.session_state.get("_map_run") != run_id:  # another run: its clusters and features are others
    for k_ in ("map_cluster", "_map_cluster_row", "map_feature"):
        st.session_state.pop(k_, None)
    st.session_state["_map_run"] = run_id
lab = data.lab()
try:
    df = data.concept_map(lab, run_id, info["created_at"])
except LabError as e:
    st.error(str(e))
    st.stop()
domains = [c[len("freq_") :] for c in df.columns if c.startswith("freq_") and not c.startswith("freq_sel_")]

with st.container(horizontal=True):
    dims = st.segmented_control("View", ["2D", "3D"], default="2D", key="map_dims")
    color_by = st.selectbox("Colour by", ["cluster", "class", "selectivity", "|selectivity|", "label score"], key="map_color")
    ref = st.selectbox("Selectivity of", domains, key="map_ref_domain", help="freq on this domain − freq on the others")
    threshold = st.slider("Leaning threshold", 0.0, 1.0, 0.5, 0.05, key="map_threshold",
                          help="A feature leans to a domain when (f_d − f_rest) / (f_d + f_rest) ≥ threshold "
                               "(0.5 = fires 3× as often there); the analysis stored classes at 0.5.")

# Classes recomputed with the chosen threshold from the stored per-domain frequencies.
freqs = np.stack([df[f"freq_{d}"].to_numpy() for d in domains], 1)
cls = np.array(["shared"] * len(df), dtype=object)
for i, d in enumerate(domains):
    rest = (freqs.sum(1) - freqs[:, i]) / max(len(domains) - 1, 1)
    ratio = (freqs[:, i] - rest) / np.clip(freqs[:, i] + rest, 1e-12, None)
    cls[ratio >= threshold] = f"{d}-leaning"
df = df.assign(feature_class=cls, selectivity=df[f"freq_sel_{ref}"],
               **{"|selectivity|": df[f"freq_sel_{ref}"].abs(), "label score": df["label_score"]})
df = df.assign(x2=df["map_x"], y2=df["map_y"], x3=df["map_x"], y3=df["map_y"], z3=df["map_z"], cluster=df["cluster"].astype(str))

f1, f2 = st.columns([1, 1])
keep = f1.multiselect("Show", sorted(set(cls)), default=sorted(set(cls)), key="map_classes")
search = f2.text_input("Search labels and contexts", key="map_search", placeholder="e.g. import, return, history")
view = df[df["feature_class"].isin(keep) & ~df["dead"]]
if search.strip():
    hits = data.search_features(lab, run_id, search.strip())
    view = view[view["feature"].isin(hits["feature"])]
    st.caption(f"{len(view)} features match '{search}' (by label or by the tokens of their top contexts)")
colour = {"class": "feature_class"}.get(color_by, color_by)
cs = data.cluster_summaries(lab, run_id, info["created_at"])
cluster = st.session_state.get("map_cluster")
if cluster is not None:
    view = view[view["cluster"] == str(cluster)]
    b1, b2 = st.columns([4, 1], vertical_alignment="center")
    b1.caption(f"Showing cluster {cluster} only (picked in the cluster table below).")
    if b2.button("Show every cluster", key="map_all_clusters"):
        st.session_state.pop("map_cluster", None)
        st.session_state.pop("_map_cluster_row", None)
        st.rerun()

if "map_feature" not in st.session_state:  # the best-labelled feature, as the inspector opens on, not feature 0
    best = data.best_feature(lab, run_id, info["created_at"])
    st.session_state["map_feature"] = best if (view["feature"] == best).any() or not len(view) else int(view["feature"].iloc[0])
selected = st.session_state.get("map_feature")
chart_col, side = st.columns([3, 2])
with chart_col:
    event = st.plotly_chart(charts.concept_map(view, 3 if dims == "3D" else 2, colour, selected), key="map_chart",
                            on_select="rerun", selection_mode="points")
points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) or hasattr(event, "get") else []
if points:
    cd = points[0].get("customdata")
    if cd and st.session_state.get("map_feature") != int(cd[0]):
        st.session_state["map_feature"] = int(cd[0])  # before the picker below exists in this run
        st.rerun()

# The clicked feature's details beside the map, not under it (a 560-px chart pushed them off-screen).
with side:
    choice = st.number_input("Feature (or click a point)", 0, int(info["d_sae"]) - 1, key="map_feature")
    row = df[df["feature"] == choice]
    if len(row):
        r = row.iloc[0]
        st.markdown(f"**Feature {choice}** · {r['feature_class']} · cluster {r['cluster']}")
        st.markdown(f"label: **{escape_markdown(str(r['title'] or '—'), one_line=True)}**"
                    + (f" (detection {r['label_score']:.2f})" if r["label_score"] == r["label_score"] else ""),
                    help=help_for("detection"))
        st.caption(f"fires on {r['freq']:.3%} of tokens · max activation {r['max_act']:.2f}")
        data.inspector_link(run_id, choice, label=f"Open feature {choice} in the inspector")
        try:
            detail = data.feature_detail(lab, run_id, int(choice), info["created_at"])
        except LabError:
            detail = {}
        shown = 0
        for dname, cset in (detail.get("contexts") or {}).items():
            top = (cset.get("top") or [])[:3]
            if top:
                st.caption(f"Top contexts on {dname}")
            for c_ in top:
                st.markdown('<div style="display:flex;gap:.5rem;align-items:baseline">'
                            f'<code>{c_["activation"]:.2f}</code>'
                            + context_html(c_["tokens"], c_["acts"], c_["center"], float(r["max_act"] or 1.0)) + "</div>",
                            unsafe_allow_html=True)
                shown += 1
        if not shown:
            st.caption("No contexts stored for this feature.")
    else:
        st.caption(f"Feature {choice} is dead (it never fires), so it has no place on the map.")

n_dead = int(info["d_sae"]) - len(df)  # the map's query leaves dead features out: they have no statistics to place
st.caption(f"{len(view)} of {int(info['d_sae'])} features shown ({n_dead} dead, not mapped). Map input per feature: decoder row "
           "⊕ "
           f"[freqA − freqB, magA − magB, freqA, freqB], PCA to 2D/3D, k-means clusters.")

st.markdown("**Clusters** — select a row to show only that cluster on the map")
if len(cs):
    cs = cs.assign(top_tokens=cs["top_tokens"].map(lambda t: ", ".join(list(t)[:8])),
                   central_features=cs["central_features"].map(lambda t: ", ".join(str(x) for x in list(t)[:5])))
    picked = st.dataframe(cs[["cluster", "size", "label", "top_tokens", "central_features", "mean_label_score"]],
                          hide_index=True, key="map_clusters", on_select="rerun", selection_mode="single-row",
                          column_config={"cluster": st.column_config.NumberColumn("cluster", width="small"),
                                         "size": st.column_config.NumberColumn("features", width="small"),
                                         "label": st.column_config.TextColumn("label", width="medium"),
                                         "top_tokens": st.column_config.TextColumn("top tokens", width="large"),
                                         "central_features": st.column_config.TextColumn("central features", width="medium"),
                                         "mean_label_score": st.column_config.NumberColumn("mean detection", format="%.2f")})
    rows = picked.selection.rows if hasattr(picked, "selection") else []
    key = (run_id, rows[0]) if rows else None
    if key is not None and key != st.session_state.get("_map_cluster_row") and rows[0] < len(cs):
        st.session_state["_map_cluster_row"] = key
        st.session_state["map_cluster"] = int(cs.iloc[rows[0]]["cluster"])
        st.rerun()
