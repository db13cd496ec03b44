"""Feature inspector: everything known about one feature, and where to go next.

Deep link: /inspector?run=RUN&feature=F (or the root with the same parameters).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.errors import LabError
from lab_app import access, charts, data, feature_actions
from lab_app.formulas import help_for
from lab_app.render import context_html, short_label
from lab_app.run_picker import pick_analysed_run

access.require()  # the access gate, before this page draws anything (why on every page: lab_app/access.py)

st.title("Feature inspector")
run_id, info = pick_analysed_run("insp")
lab = data.lab()
d_sae = int(info["d_sae"])

if "insp_feature" not in st.session_state or st.session_state.get("_insp_qp") != st.query_params.get("feature"):
    try:
        wanted = int(st.query_params["feature"]) if "feature" in st.query_params else data.best_feature(lab, run_id,
                                                                                                        info["created_at"])
    except ValueError:
        wanted = data.best_feature(lab, run_id, info["created_at"])
    st.session_state["insp_feature"] = min(max(wanted, 0), d_sae - 1)
    st.session_state["_insp_qp"] = st.query_params.get("feature")
feature = int(st.number_input("Feature", 0, d_sae - 1, key="insp_feature", width=220))
st.query_params.update({"run": run_id, "feature": str(feature)})

try:
    detail = data.feature_detail(lab, run_id, feature, info["created_at"])
except LabError as e:
    st.error(str(e))
    st.stop()
f = detail["feature"]
domains = detail["domains"]

title = f.get("title") or "—"  # the label only when its score clears chance (engine.analysis.label_trust)
score = f.get("label_score")
st.subheader(f"Feature {feature}: {title}")
st.caption(f"run `{run_id}` · {info['name']} · L{info['layer']} k={info['k']} d_sae={d_sae} · class **{f.get('class')}** · "
           f"cluster {f.get('cluster')}"
           + (f" · link: `?run={run_id}&feature={feature}`"))
if f.get("dead"):
    st.warning("This feature never fires on the lab's text (dead): there are no contexts to show.")

c = st.columns(5)
c[0].metric("frequency", f"{f['freq']:.3%}" if f.get("freq") is not None else "—", help=help_for("frequency"))
c[1].metric("mean activation", f"{f['mean_act']:.3f}" if f.get("mean_act") is not None else "—",
            help="Mean activation when the feature fires.")
c[2].metric("max activation", f"{f['max_act']:.3f}" if f.get("max_act") is not None else "—")
c[3].metric("fires on (tokens)", f"{int(f.get('n_fires') or 0):,}", help="Tokens of the lab's text on which it fires.")
low, high = f.get("label_score_low"), f.get("label_score_high")
c[4].metric("label detection", "—" if score is None else f"{score:.2f}",
            delta=None if low is None else f"95% {low:.2f}–{high:.2f}", delta_color="off", help=help_for("detection"))
if f.get("label") and not f.get("label_reliable"):
    st.caption(f"The automatic label \"{f['label']}\" is a guess: its held-out detection score does not clear chance (0.5) "
               "by 0.1 with 95% confidence"
               + ("" if score is None else f" (score {score:.2f}, 95% interval from {low:.2f})") + ".")
concepts = detail.get("concepts") or []
if concepts:
    best = concepts[0]
    also = ", ".join(f"{c_['concept']} (F1 {c_['f1']:.2f})" for c_ in concepts[1:4])
    st.info(f"Ground truth: this is the best latent for the concept **{best['concept']}** — held-out F1 {best['f1']:.2f} "
            f"(precision {best['precision']:.2f}, recall {best['recall']:.2f}, AUROC {best['auroc']:.2f})"
            + (f"; also for {also}" if also else "") + ".", icon=":material/verified:")

left, right = st.columns([3, 2])
with right:
    st.markdown("**Per domain**")
    dom = pd.DataFrame(domains)
    if len(dom):
        # One row per figure, one column per domain: it fits the narrow column whatever the number of
        # domains' figures (five figure columns side by side were cut at 1280 px).
        figures = {"freq": ("frequency", "{:.4f}"), "mean_act": ("mean when firing", "{:.2f}"),
                   "max_act": ("max", "{:.2f}"), "selectivity": ("selectivity", "{:+.3f}"),
                   "detection_score": ("label detection", "{:.2f}")}
        table = pd.DataFrame({row["domain"]: [fmt.format(row[key]) if pd.notna(row.get(key)) else "–"
                                              for key, (_, fmt) in figures.items()]
                              for row in dom.to_dict("records")},
                             index=[name for name, _ in figures.values()])
        st.dataframe(table, key="insp_domains")
        st.caption(f"frequency: {help_for('frequency')} selectivity: {help_for('selectivity')}")
        hist_max = float(f.get("hist_max") or 0)
        if hist_max > 0:
            st.markdown("**Activation histogram** (non-zero activations)")
            edges = np.linspace(0, hist_max, len(domains[0]["hist_counts"]) + 1).tolist()
            st.altair_chart(charts.domain_histograms(edges, {dd["domain"]: dd["hist_counts"] for dd in domains}), width="stretch")
    te = detail.get("token_effects") or {}
    if te.get("up"):
        causal = data.run_config(lab, run_id).get("model", {}).get("is_causal", False)
        st.markdown("**Token effects** (decoder direction through the " + ("unembedding" if causal else "token embeddings") + ")")
        eff = pd.DataFrame([{"token": t["token"], "score": t["effect"]} for t in te["up"][:10]]
                           + [{"token": t["token"], "score": t["effect"]} for t in te["down"][:10]])
        st.altair_chart(charts.token_effects(eff), width="stretch")

with left:
    st.markdown("**Top activating contexts** (±10 tokens; colour = activation, outlined = the token itself)")
    ctx = detail.get("contexts") or {}
    tabs = st.tabs([f"{dname} ({len(c_.get('top', []))})" for dname, c_ in ctx.items()] or ["no contexts"])
    scale = float(f.get("max_act") or 1.0)
    for tab, (dname, cset) in zip(tabs, ctx.items()):
        with tab:
            for c_ in cset.get("top", [])[:20]:
                st.markdown(f'<div style="display:flex;gap:.6rem;align-items:baseline"><code>{c_["activation"]:.2f}</code>'
                            f'{context_html(c_["tokens"], c_["acts"], c_["center"], scale)}'
                            f'{"<small>held-out</small>" if c_.get("held_out") else ""}</div>', unsafe_allow_html=True)
            quant = cset.get("quantile", [])
            if quant and st.toggle(f"Examples across activation quantiles ({len(quant)})", key=f"insp_q_{dname}"):
                with st.container():
                    for q in sorted({x["quantile"] for x in quant}, reverse=True):
                        group = [x for x in quant if x["quantile"] == q]
                        st.caption(f"quantile {q}: activation {group[0]['q_lower']:.2f}–{group[0]['q_upper']:.2f}")
                        for c_ in group:
                            act = c_.get("activation")
                            st.markdown('<div style="display:flex;gap:.6rem;align-items:baseline">'
                                        + (f"<code>{act:.2f}</code>" if act is not None else "")
                                        + context_html(c_["tokens"], c_["acts"], c_["center"], scale) + "</div>",
                                        unsafe_allow_html=True)

st.divider()
n1, n2, n3 = st.columns(3)
nb = detail.get("neighbours") or {}
for col, kind, title in ((n1, "decoder", "Nearest by decoder cosine"), (n2, "activation", "Nearest by activation correlation")):
    with col:
        st.markdown(f"**{title}**")
        for n in (nb.get(kind) or [])[:8]:
            data.inspector_link(run_id, n["neighbour"],
                                label=f"{n['neighbour']} · {short_label(n.get('title')) or '—'} · {n['score']:.2f}")
with n3:
    st.markdown("**The same feature in other runs** (best decoder-cosine match)")
    others = data.analysed_runs(lab)
    others = others[others["run_id"] != run_id]
    if others.empty:
        st.caption("No other analysed run to compare with.")
    else:
        names = {r.run_id: f"{r.name} · L{r.layer} k={r.k} [{r.run_id[-6:]}]" for r in others.itertuples()}
        other = st.selectbox("Run", [None, *names],
                             format_func=lambda r: "pick a run to match against" if r is None else names[r], key="insp_other")
        if other is None:
            st.caption("Matching loads both SAEs and compares every decoder direction (cached after).")
        else:
            try:
                m = data.match_in_other_run(lab, run_id, other, feature)
                st.markdown(f"feature **{m['feature_b']}** (cosine {m['cosine']:.3f})")
                data.inspector_link(other, m["feature_b"], label=f"open feature {m['feature_b']} of that run")
            except LabError as e:
                st.caption(str(e))

feature_actions.render(run_id, feature, detail, info)  # findings cards and interventions for this feature
