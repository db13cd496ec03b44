"""Runs over time: the run table (tags and notes editable), run administration, curves, the seed's figures, sweeps, diffs."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import streamlit as st

from core.errors import LabError
from engine.training import architectures
from lab_app import access, charts, data, run_admin, run_table
from lab_app.formulas import help_for
from lab_app.render import escape_markdown


def _k_meaning(arch: str, k: int) -> str:
    """What k means for this run's architecture, as its registry entry says (no name is tested here)."""
    try:
        meaning = architectures.get(arch).k_meaning
    except LabError:
        return f"{arch}, k = {k}"
    return {"exact": f"exactly k = {k} per token",
            "mean": f"k = {k} per token on average in training, a calibrated threshold at inference",
            "target": f"training steered to L0 = k = {k}"}.get(meaning, f"k = {k}")


access.require()  # the access gate, before this page draws anything (why on every page: lab_app/access.py)

st.title("Runs")
lab = data.lab_or_stop()
runs = data.runs(lab)
if runs.empty:
    st.info("No runs yet.")
    st.stop()

# -- the run table --------------------------------------------------------------------------------
f1, f2, f3 = st.columns(3)
status = f1.multiselect("Status", sorted(runs["status"].unique()), key="runs_status")
sweeps = data.sweeps(lab)
sweep_names = {r.sweep_id: f"{r.name} ({r.sweep_id})" for r in sweeps.itertuples()}
sweep = f2.selectbox("Sweep", [None, *sweep_names],
                     format_func=lambda s: "all runs" if s is None else sweep_names[s], key="runs_sweep")
tag = f3.text_input("Tag contains", key="runs_tag")
view = runs
if status:
    view = view[view["status"].isin(status)]
if sweep:
    view = view[view["sweep_id"] == sweep]
if tag:
    view = view[view["tags"].map(lambda t: any(tag.lower() in x.lower() for x in (list(t) if t is not None else [])))]

table = view[["run_id", "status", "name", "sweep_id", "layer", "hook", "architecture", "k", "d_sae", "trained_on", "fvu", "r2",
              "mse", "cosine", "transfer_ratio", "l0", "dead_frac_train", "dead_frac", "concept_coverage", "probe_k1",
              "probe_k1_baseline", "score", "seconds", "ended_at", "tags", "notes"]].copy()
table["score"] = [f"{s_:.2f}" + (" ⚠" if w else "") if s_ == s_ else None
                  for s_, w in zip(view["score"], view["quality_warnings"])]
table["tags"] = table["tags"].map(lambda t: ", ".join(t) if t is not None else "")
edited = run_table.show(
    table, "runs_table", editable=("tags", "notes"),
    default=["run_id", "fvu", "transfer_ratio", "l0", "dead_frac_train", "dead_frac", "score", "status", "layer", "k",
             "d_sae", "architecture", "trained_on", "r2", "concept_coverage", "probe_k1", "seconds", "ended_at", "tags",
             "notes", "name"],
    extra_config={"score": st.column_config.TextColumn(
        "quality", help=help_for("score") + " ⚠ = the lab's own checks disagree (see the run's figures).", pinned=True),
        "tags": st.column_config.TextColumn("tags", help="comma-separated; saved when you press Save")},
)
table = run_table.with_short_names(table)
changed = edited[(edited["tags"] != table["tags"]) | (edited["notes"].fillna("") != table["notes"].fillna(""))]
if len(changed) and st.button(f"Save tags and notes of {len(changed)} run(s)", type="primary", key="runs_save"):
    from engine.recording import annotate_run

    try:
        for r in changed.itertuples():
            annotate_run(data.lab(), r.run_id, tags=[t for t in str(r.tags).split(",")], notes=str(r.notes or ""))
        data.clear()
        st.rerun()
    except LabError as e:
        st.error(str(e))

run_admin.render(runs)  # mark a stuck run failed, delete a run (with a confirmation)

finished = view[view["status"] == "FINISHED"]
if finished.empty:
    st.stop()

# One section at a time: Streamlit builds every tab's charts even when hidden, so a selector keeps
# the page fast on a lab with many runs.
SECTIONS = ["Over time", "Training curves", "A run's figures", "Sweep", "Diff two runs"]
# ?run=… (the sidebar's finished jobs link here) opens that run's figures, once per link.
wanted_run = st.query_params.get("run")
if wanted_run in set(finished["run_id"]) and st.session_state.get("_runs_link") != wanted_run:
    st.session_state["_runs_link"] = wanted_run
    st.session_state["runs_section"] = "A run's figures"
    st.session_state["fig_run"] = wanted_run
section = st.segmented_control("Show", SECTIONS, default="Over time", key="runs_section") or "Over time"


SPLICE_COLUMNS = {
    "eval_domain": ("evaluated on", "the domain whose held-out sequences were run"),
    "kind": ("model", "causal LM (cross-entropy) or encoder (sentence-embedding cosine)"),
    "ce_clean": ("CE clean", "next-token cross-entropy of the untouched model"),
    "ce_sae": ("CE with SAE", "cross-entropy with the SAE's reconstruction spliced in at the hook"),
    "ce_zero": ("CE zero-ablated", "cross-entropy with the activation set to zero"),
    "ce_recovered": ("CE recovered", help_for("ce_recovered")),
    "kl_sae": ("KL with SAE", "KL(clean ‖ spliced) of the next-token distributions"),
    "emb_cos_sae": ("embedding cos (SAE)", help_for("emb_cos_sae")),
    "emb_cos_zero": ("embedding cos (zero)", "the same cosine with the activation zero-ablated"),
    "emb_cos_recovered": ("embedding recovered", "(cos_sae − cos_zero) / (1 − cos_zero): 1 = as good as the clean model"),
    "note": ("note", "why a figure is empty"),
}
QUALITY_PARTS = {"mse": "MSE", "cosine": "cosine", "explained_variance": "explained variance (R²)", "l0": "L0",
                 "dead_frac": "dead (held-out)"}


def quality_parts(details: dict) -> pd.DataFrame:
    """The quality score's inputs as rows a person reads (figure, value, band), not a collapsed JSON object."""
    rows = [{"figure": QUALITY_PARTS.get(k, k.replace("_", " ")), "value": v.get("value"), "band": v.get("band"),
             "target": v.get("target_k")}
            for k, v in details.items() if isinstance(v, dict) and "band" in v]
    df = pd.DataFrame(rows)
    if len(df) and df["target"].isna().all():
        return df.drop(columns=["target"])
    return df.assign(target=df["target"].map(lambda t: "" if t is None or t != t else f"{int(t)}")) if len(df) else df


short = run_table.short_names(runs)
label = {r: f"{n} [{r[-6:]}]" for r, n in zip(runs["run_id"], short)}
TIME_METRICS = ["fvu", "r2", "transfer_ratio", "l0", "dead_frac", "score", "concept_coverage", "probe_k1"]
CURVE_NAMES = {"loss": "loss", "fvu": "FVU (training batch)", "mse": "MSE", "l0": "L0", "dead_frac": "dead (train)",
               "aux_loss": "AuxK loss", "lr": "learning rate", "tokens_per_s": "tokens / s"}


def curve_legend(colours: dict[str, str]) -> None:
    """One legend under the small multiples, full names (HTML-escaped: run names are user text)."""
    st.markdown(" &nbsp; ".join(f'<span style="color:{c}">●</span>&nbsp;{html.escape(n)}' for n, c in colours.items()),
                unsafe_allow_html=True)


def small_multiples(sm: pd.DataFrame, names: list[str], per_row: int = 3) -> None:
    """One chart per metric, per_row to a row, each in its own column: a faceted chart has a fixed
    width per facet and ran past its column at 1280 px."""
    sm = sm.assign(run=sm["run_id"].map(label))
    colours = charts.run_colours(list(dict.fromkeys(label[r] for r in sm["run_id"])))
    present = [n for n in names if (sm["name"] == n).any()]
    for i in range(0, len(present), per_row):
        cols = st.columns(per_row)
        for col, metric in zip(cols, present[i:i + per_row]):
            col.altair_chart(charts.step_curve(sm, metric, colours, CURVE_NAMES.get(metric, metric)), width="stretch")
    curve_legend(colours)
    steps = sm.groupby("run")["step"].nunique()
    if (steps <= 1).any():
        st.caption("One logged step for " + ", ".join(steps[steps <= 1].index) + ": a single point, not a curve "
                   "(the budget gave one training step).")


if section == "Over time":
    metric = st.selectbox("Metric", TIME_METRICS, key="time_metric", format_func=run_table.LABELS.get)
    st.altair_chart(charts.metric_over_time(finished, metric, run_table.LABELS.get(metric, metric)), width="stretch")
    st.caption(help_for(metric) + (" The dashed line is transfer = 1 (no loss on the other domains)."
                                   if metric == "transfer_ratio" else ""))

if section == "Training curves":
    chosen = st.multiselect("Runs", list(finished["run_id"]), default=list(finished["run_id"][:2]),
                            format_func=lambda r: label[r], key="curve_runs")
    names = st.multiselect("Metrics", list(CURVE_NAMES), default=["fvu", "dead_frac", "aux_loss"], key="curve_names",
                           format_func=CURVE_NAMES.get)
    sm = data.step_metrics(lab, tuple(chosen), tuple(names))
    if sm.empty:
        st.caption("No step metrics for this choice.")
    else:
        small_multiples(sm, names)

if section == "A run's figures":
    rid = st.selectbox("Run", list(finished["run_id"]), format_func=lambda r: label[r], key="fig_run")
    row = finished[finished["run_id"] == rid].iloc[0]
    a, b = st.columns(2)
    with a:
        st.markdown("**Reconstruction curve** (training FVU per step)")
        curve = data.step_metrics(lab, (rid,), ("fvu",))
        if not curve.empty:
            curve = curve.assign(run=curve["run_id"].map(label))
            st.altair_chart(charts.step_curve(curve, "fvu", charts.run_colours([label[rid]]), "FVU (training batch)"),
                            width="stretch")
            if curve["step"].nunique() <= 1:
                st.caption("One logged step: a single point, not a curve.")
        elif data.run_config(lab, rid).get("import"):
            st.caption("Imported from elsewhere: no training curves.")
        ev = data.eval_rows(lab, row["group_id"])
        st.markdown("**Transfer matrix** (held-out MSE; hover for the ratio)")
        st.altair_chart(charts.transfer_heatmap(ev, y_title="reference (imported)" if ev["imported"].any()
                                                else "trained on"), width="stretch")
        st.altair_chart(charts.transfer_bars(ev), width="stretch")
        st.caption(help_for("transfer_ratio"))
    with b:
        try:
            fd = data.concept_map(lab, rid)
        except LabError:
            fd = None
        if fd is not None and len(fd):
            fd = fd.assign(frequency=fd["freq"], mean_act=fd[[c for c in fd.columns if c.startswith("mean_act_")]].max(axis=1),
                           feature_class=fd["class"])
            st.markdown("**Feature frequency vs magnitude**")
            st.altair_chart(charts.freq_vs_magnitude(fd[~fd["dead"]]), width="stretch")
            st.markdown("**Firing frequency histogram** (log10 of the share of tokens each live feature fires on)")
            live = np.log10(fd.loc[~fd["dead"], "freq"].clip(lower=1e-6))
            counts, edges = np.histogram(live, bins=30)
            st.altair_chart(charts.histogram_bars(edges.tolist(), counts.tolist(), "log10 frequency", "features"),
                            width="stretch")
        else:
            st.caption("Frequency vs magnitude needs the run's feature analysis (`python -m engine analyze RUN`).")
        st.markdown(f"**L0**: {row['l0']:.1f} active latents per token ({_k_meaning(row['architecture'], int(row['k']))})")
        training = data.run_config(lab, rid).get("training") or {}
        dead = (f"**Dead latents**: {row['dead_frac_train']:.1%} on the training split, {row['dead_frac']:.1%} on the held-out "
                "tokens" if pd.notna(row.get("dead_frac_train")) else f"**Dead latents** (held-out): {row['dead_frac']:.1%}")
        st.markdown(dead, help=help_for("dead_frac_train"))
        imported = data.run_config(lab, rid).get("import")
        if imported:
            where = escape_markdown(str(imported.get("path")), one_line=True)
            st.markdown(f"**Imported** from a {imported.get('format')} folder: {where} (weights sha256 "
                        f"{str(imported.get('weights_sha256', ''))[:16]}…, "
                        f"{escape_markdown(str(imported.get('source_architecture')), one_line=True)})")
            for note in imported.get("notes") or []:
                st.caption(f"import: {escape_markdown(str(note), one_line=True)}")
        else:
            st.markdown(f"**Matmul dtype**: {training.get('matmul_dtype', 'not recorded')}", help=help_for("matmul_dtype"))
    # Full width under the two columns: in a half column these tables were cut off.
    sp = data.splice_rows(lab, rid)
    if len(sp):
        st.markdown("**Splice fidelity** (the model run with the SAE's reconstruction in place of the activation)")
        cols = [c for c in SPLICE_COLUMNS if c in sp and (sp[c].notna().any() or c in ("eval_domain", "kind"))]
        st.dataframe(sp[cols], hide_index=True, key="run_splice",
                     column_config={c: (st.column_config.NumberColumn(SPLICE_COLUMNS[c][0], format="%.4f",
                                                                      help=SPLICE_COLUMNS[c][1])
                                        if c not in ("eval_domain", "kind", "note")
                                        else st.column_config.TextColumn(SPLICE_COLUMNS[c][0], help=SPLICE_COLUMNS[c][1],
                                                                         width="large" if c == "note" else None))
                                    for c in cols})
    q = data.quality(lab, rid)
    if q:
        details = json.loads(q["details"]) if isinstance(q["details"], str) else q["details"]
        st.markdown(f"**Quality** {q['score']:.2f}/5 ({q['rating']}): reconstruction {q['reconstruction_points']:.2f}/2, "
                    f"sparsity {q['sparsity_points']:.2f}/2, interpretability {q['interpretability_points']:.1f}/1",
                    help=help_for("score"))
        for w in (details or {}).get("warnings") or []:
            st.warning(f"Not fit for interpretability, whatever the rating says: {w}.")
        parts = quality_parts(details or {})
        if len(parts):
            st.dataframe(parts, hide_index=True, key="run_quality",
                         column_config={"value": st.column_config.NumberColumn("value", format="%.4g"),
                                        "band": st.column_config.TextColumn("band", help="the seed's band for this figure"),
                                        "target": st.column_config.TextColumn("target k")})
        if (details or {}).get("interpretable_rule"):
            by = details.get("interpretable_by") or {}
            st.caption(f"{details.get('distinct_interpretable_features', 0)} distinct interpretable features "
                       f"({by.get('reliable_labels', 0)} by a reliable label, {by.get('concepts', 0)} by a concept): "
                       f"{details['interpretable_rule']}.")
    concepts = data.concept_results(lab, rid)
    st.markdown("**Ground-truth concepts** "
                "(held-out tokens; best latent chosen on the training split; probes vs the model's own dims)",
                help=help_for("concept_coverage"))
    if concepts.empty:
        st.caption("No concept evaluation yet: it runs with the feature analysis (`python -m engine analyze RUN`).")
    else:
        ev = concepts[concepts["status"] == "evaluated"].copy()
        ev["inspect"] = [f"inspector?run={rid}&feature={int(f_)}" for f_ in ev["best_latent"]]
        st.dataframe(ev[["concept", "best_latent", "inspect", "f1", "precision", "recall", "auroc", "probe_k1", "probe_k2",
                         "probe_k5", "baseline_k1", "baseline_k2", "baseline_k5", "latents_to_90", "n_val_pos"]],
                     hide_index=True, key="run_concepts",
                     column_config={"inspect": st.column_config.LinkColumn("inspector", display_text="open",
                                                                           help="the best latent in the inspector"),
                                    "best_latent": st.column_config.NumberColumn("best latent", format="%d"),
                                    "latents_to_90": st.column_config.NumberColumn(
                                        "latents to 90 %", help="the k whose probe reaches 90 % of the 64-latent probe's recall"),
                                    "n_val_pos": st.column_config.NumberColumn("held-out positives", format="%d"),
                                    **{c: st.column_config.NumberColumn(c.replace("_", " "), format="%.2f")
                                       for c in ("f1", "precision", "recall", "auroc", "probe_k1", "probe_k2", "probe_k5",
                                                 "baseline_k1", "baseline_k2", "baseline_k5")}})
        skipped = concepts[concepts["status"] != "evaluated"]
        if len(skipped):
            st.caption(f"Not evaluated ({len(skipped)}): "
                       + ", ".join(f"{c} ({s_})" for c, s_ in zip(skipped["concept"], skipped["status"])))

if section == "Sweep":
    if sweeps.empty:
        st.caption("No sweeps yet: launch one from the sidebar.")
    else:
        sid = st.selectbox("Sweep", list(sweep_names), format_func=lambda s: sweep_names[s], key="sweep_pick")
        s = sweeps[sweeps["sweep_id"] == sid].iloc[0]
        configs = data.configurations(lab, sid)
        st.caption(f"{s['finished']}/{s['n_jobs']} jobs finished · ranked by {s['metric']} ({s['goal']}) · {help_for('overall')}")
        if configs.empty:
            st.caption("No finished configurations yet.")
        else:
            board = configs.sort_values(s["metric"], ascending=s["goal"] == "minimize").reset_index(drop=True)
            board.insert(0, "rank", range(1, len(board) + 1))
            board_cols = ["rank", "layer", "hook", "architecture", "k", "d_sae", "fvu", "r2", "transfer_ratio", "l0", "dead_frac",
                          "score", "concept_coverage", "probe_k1", "overall"]
            st.dataframe(board[board_cols], hide_index=True, key="sweep_board",
                         column_config={c: st.column_config.NumberColumn(run_table.LABELS.get(c, c), help=help_for(c) or None,
                                                                         format=run_table.FORMATS.get(c))
                                        for c in board_cols if c in run_table.FORMATS or c == "score"})
            from engine.sweeps.leaderboard import pareto_front

            by = "architecture" if configs["architecture"].nunique() > 1 else "layer"
            st.markdown(f"**FVU vs L0 with the Pareto front per {by}**")
            colour = st.radio("Colour points by", [by, "concept coverage"], horizontal=True, key="pareto_colour")
            st.altair_chart(charts.pareto(configs, pareto_front(configs, by=by), by, colour == "concept coverage"),
                            width="stretch")
            if len(configs) > 1:
                st.markdown("**Parallel coordinates**")
                dims = [c for c in ["layer", "k", "d_sae", "fvu", "transfer_ratio", "l0", "dead_frac",
                                    "overall"] if configs[c].nunique() > 1 or c in ("fvu", "overall")]
                st.plotly_chart(charts.parallel_coordinates(configs, dims, "overall", run_table.LABELS), key="parcoords")

if section == "Diff two runs":
    ids = list(finished["run_id"])
    c1, c2 = st.columns(2)
    a_id = c1.selectbox("Run A", ids, format_func=lambda r: label[r], key="diff_a")
    b_id = c2.selectbox("Run B", ids, index=min(1, len(ids) - 1), format_func=lambda r: label[r], key="diff_b")
    ca, cb = data.run_config(lab, a_id), data.run_config(lab, b_id)

    def flat(d, prefix=""):
        out = {}
        for k, v in (d or {}).items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
        return out

    fa, fb = flat(ca.get("experiment")), flat(cb.get("experiment"))
    fa["train_domain"], fb["train_domain"] = ca.get("train_domain"), cb.get("train_domain")
    keys = sorted(set(fa) | set(fb))
    diff = pd.DataFrame({"setting": [k.replace("train_domain", "trained on") for k in keys], "A": [str(fa.get(k)) for k in keys],
                         "B": [str(fb.get(k)) for k in keys]})
    only = st.toggle("Only differences", value=True, key="diff_only")
    st.dataframe(diff[diff["A"] != diff["B"]] if only else diff, hide_index=True, key="diff_table")
    mcols = ["fvu", "r2", "mse", "cosine", "transfer_ratio", "l0", "dead_frac", "score"]
    ra, rb = finished.set_index("run_id").loc[a_id, mcols], finished.set_index("run_id").loc[b_id, mcols]
    st.dataframe(pd.DataFrame({"metric": [run_table.LABELS.get(c, c) for c in mcols], "A": ra.values, "B": rb.values,
                               "B − A": (rb - ra).values}),
                 hide_index=True, key="diff_metrics",
                 column_config={c: st.column_config.NumberColumn(c, format="%.4f") for c in ("A", "B", "B − A")})
