"""Text probe: type a text, see every token's top features (seed 004's "top features for a text");
pick a feature to inspect it or to see its top texts from the corpora."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.errors import LabError
from core.lab import Lab
from lab_app import access, data
from lab_app.render import short_label, token_sequence_html
from lab_app.run_picker import pick_analysed_run

access.require()  # the access gate, before this page draws anything (why on every page: lab_app/access.py)


@st.cache_resource(show_spinner="Loading the model and the SAE…", max_entries=2)
def prober(lab: Lab, run_id: str):
    # deferred: loads torch, paid when the probe first runs
    from engine.analysis.probe import Prober

    return Prober(lab, run_id)


st.title("Text probe")
run_id, info = pick_analysed_run("probe")
lab = data.lab()
text = st.text_area("Text", "import numpy as np\nThe history of the city begins in the twelfth century.",
                    key="probe_text", height=100)
top_n = st.slider("Features per token", 1, 10, 5, key="probe_top")
if not text.strip():
    st.info("Type some text to probe.")
    st.stop()
try:
    result = prober(lab, run_id).probe(text, top_n)
except LabError as e:
    st.error(str(e))
    st.stop()
if result.truncated:
    st.warning("The text was longer than the run's sequence length and was cut.")

rows = []
for t in result.tokens:
    if t.special:
        continue
    rows.append({"position": t.position, "token": t.token,
                 "features": ", ".join(f"{j} ({a:.2f})" for j, a in t.features),
                 "top feature": t.features[0][0] if t.features else None,
                 "activation": t.features[0][1] if t.features else 0.0})
table = pd.DataFrame(rows)
labels = {j: short_label(t) for j, t in  # reliable labels; a guess says so
          data.concept_map(lab, run_id, info["created_at"]).set_index("feature")["title"].to_dict().items()}
table["label"] = table["top feature"].map(lambda j: labels.get(j) if j == j and j is not None else None)
st.markdown("**Each token's top features** — select a row to look at its top feature")
event = st.dataframe(table[["position", "token", "top feature", "label", "activation", "features"]], hide_index=True,
                     key="probe_table", on_select="rerun", selection_mode="single-row", height=360,
                     column_config={"position": st.column_config.NumberColumn("#", width="small"),
                                    "top feature": st.column_config.NumberColumn("top feature", width="small"),
                                    "label": st.column_config.TextColumn(
                                        "label", width="medium",
                                        help="the top feature's label; 'guess:' = its held-out detection score does not "
                                             "clear chance, so it is only the most frequent tokens"),
                                    "activation": st.column_config.NumberColumn(format="%.2f", width="small"),
                                    "features": st.column_config.TextColumn(
                                        "features (activation)", width="large",
                                        help="every feature shown for this token, strongest first")})
totals = pd.DataFrame(result.totals, columns=["feature", "summed"])
totals["label"] = totals["feature"].map(labels)
# The picker lists features strongest first (summed over the text), so it opens on the strongest one.
# The summed activations of the strongest features over the text; a feature outside that list gets
# the sum over the tokens it is listed for (it was shown as "summed 0.00").
shown_sums: dict[int, float] = {}
for t in result.tokens:
    for j, a in ([] if t.special else t.features):
        shown_sums[int(j)] = shown_sums.get(int(j), 0.0) + float(a)
strength = {**shown_sums, **{int(j): float(s_) for j, s_ in result.totals}}
feature_ids = sorted({int(j) for t in result.tokens for j, _ in t.features}, key=lambda j: (-strength.get(j, 0.0), j))
selected_rows = [i for i in (event.selection.rows if hasattr(event, "selection") else []) if i < len(table)]
chosen = table.iloc[selected_rows[0]]["top feature"] if selected_rows else None
# The selectbox keeps its own state: a newly selected row has to write the row's feature into that
# state before the selectbox is drawn, or the click would change nothing on screen.
row_key = (run_id, text, int(selected_rows[0])) if selected_rows else None
if row_key is not None and st.session_state.get("_probe_row") != row_key and chosen == chosen and int(chosen) in feature_ids:
    st.session_state["probe_feature"] = int(chosen)
st.session_state["_probe_row"] = row_key
if st.session_state.get("probe_feature") not in feature_ids:
    st.session_state.pop("probe_feature", None)
if feature_ids:
    left, right = st.columns([3, 2])
    with right:
        st.markdown("**Strongest over the whole text** (summed activation)")
        st.dataframe(totals, hide_index=True, key="probe_totals", height=300,
                     column_config={"summed": st.column_config.NumberColumn(format="%.2f"),
                                    "label": st.column_config.TextColumn("label", width="large")})
    with left:
        pick = st.selectbox("Feature", feature_ids, key="probe_feature",
                            format_func=lambda j: f"{j} · {labels.get(j) or 'no reliable label'} · "
                                                  f"summed {strength.get(j, 0):.2f}")
        acts = [dict(t.features).get(pick, 0.0) for t in result.tokens if not t.special]
        toks = [t.token for t in result.tokens if not t.special]
        st.markdown(f"**Feature {pick} on this text**")
        st.markdown(token_sequence_html(toks, acts, max(acts) or 1.0), unsafe_allow_html=True)
        data.inspector_link(run_id, pick, label=f"Inspect feature {pick}")
        with st.expander(f"Top texts for feature {pick} from the corpora"):
            from engine.analysis.queries import top_texts
            from lab_app.render import context_html

            for r in top_texts(lab, run_id, int(pick), n=10):
                st.markdown(f"<code>{r['activation']:.2f}</code> <small>{r['domain']}</small> "
                            + context_html(r["tokens"], r["acts"], r["center"], r["activation"] or 1.0), unsafe_allow_html=True)
