"""The inspector's action area: this feature's findings cards, labelling it in one step, and
interventions (suppress / amplify it and see what changes), attachable to a card as evidence."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from core.errors import LabError
from engine.analysis.queries import render_tokens
from findings import attach_evidence, card_from_feature, cards_for_feature
from findings.evidence import run_rows
from findings.prefill import prefill
from findings.render import escape_markdown
from lab_app import data


def _cards_section(run_id: str, feature: int, detail: dict[str, Any]) -> list:
    lab = data.lab()
    cards = cards_for_feature(lab, run_id, feature)
    st.markdown(f"**Findings cards about this feature** ({len(cards)})")
    for c in cards:
        st.page_link(data.page("findings"), label=f"{c.title} — {c.status}, {c.confidence} confidence (rev. {c.revision})",
                     query_params={"card": c.card_id}, icon=":material/bookmark:")
    with st.form(f"label_{run_id}_{feature}", border=True):
        st.markdown("**Label this feature** — saves a draft card with the evidence you see, frozen")
        pre = prefill(run_rows(lab, [run_id])[run_id], feature, detail)
        title = st.text_input("Title", pre.get("title", ""), max_chars=200)
        claim = st.text_area("Claim (the hypothesis in a sentence)", pre.get("claim", ""), height=70)
        c1, c2, c3 = st.columns(3)
        confidence = c1.selectbox("Confidence", ["low", "medium", "high"],
                                  index=["low", "medium", "high"].index(pre.get("confidence", "low")))
        tags = c2.text_input("Tags (comma-separated)", ", ".join(pre.get("tags", [])))
        author = c3.text_input("Author", st.session_state.get("author", ""))
        if st.form_submit_button("Save card", type="primary", icon=":material/bookmark_add:"):
            try:
                card = card_from_feature(lab, run_id, feature, author=author, title=title, claim=claim, confidence=confidence,
                                         tags=[t.strip() for t in tags.split(",") if t.strip()])
                st.session_state["author"] = author
                st.success(f"Saved card {card.card_id}: {escape_markdown(card.title, one_line=True)}")
                st.page_link(data.page("findings"), label="Open it to refine", query_params={"card": card.card_id},
                             icon=":material/edit:")
            except LabError as e:
                st.error(str(e))
    return cards


def _default_text(detail: dict[str, Any]) -> str:
    for cset in (detail.get("contexts") or {}).values():
        if cset.get("top"):
            toks = [t for t in cset["top"][0]["tokens"] if t not in ("[CLS]", "[SEP]", "[PAD]")]
            while toks and toks[0].startswith("##"):  # the window may open mid-word: start at a whole word
                toks = toks[1:]
            return render_tokens(toks)
    return ""


def _fmt(v: Any, f: str = ".2e") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, f)


def _interventions_section(run_id: str, feature: int, detail: dict[str, Any], cards: list) -> None:
    # deferred: loads torch, which the inspector starts without
    from engine.interventions import intervene
    from engine.interventions.queries import interventions_for_feature

    st.markdown("**Intervene**: replace the activation with the SAE's reconstruction plus its error (exact when "
                "untouched), then edit this feature, and measure what changes")
    with st.form(f"iv_{run_id}_{feature}"):
        c1, c2 = st.columns([3, 2])
        op = c1.segmented_control("Edit", ["zero", "scale", "clamp"], default="zero")
        value = c2.number_input("Factor / value", value=4.0, step=0.5,
                                help="scale: multiply the feature's activation; clamp: set it (also where it did not fire)")
        text = st.text_area("Text", _default_text(detail), height=80)
        go = st.form_submit_button("Run intervention", icon=":material/science:")
    if go:
        try:
            with st.spinner("Running the model with and without the edit…"):
                res = intervene(data.lab(), run_id, feature, op or "zero", None if op == "zero" else float(value), text)
            st.session_state[f"iv_result_{run_id}_{feature}"] = res
        except LabError as e:
            st.error(str(e))
    res = st.session_state.get(f"iv_result_{run_id}_{feature}")
    if res is not None:
        st.info(res.summary_line())
        m = st.columns(4)
        if res.model_kind == "causal":
            m[0].metric("mean KL", _fmt(res.kl_mean), help="Mean over positions of KL(clean ‖ edited) next-token distributions.")
            m[1].metric("max KL", _fmt(res.kl_max))
        else:
            m[0].metric("embedding shift", _fmt(res.cosine_shift),
                        help="1 − cos(pooled clean, pooled edited) sentence embedding.")
        m[2].metric("edited positions", res.n_edited_positions)
        m[3].metric("seconds", f"{res.seconds:.2f}")
        up, down = res.token_movers.get("up", []), res.token_movers.get("down", [])
        if up or down:
            a, b = st.columns(2)
            src = "next-token logits" if res.token_source == "logits" else "the tied word embeddings"
            a.caption(f"Pushed up (through {src})")
            a.dataframe(pd.DataFrame(up)[[c for c in ("token", "delta",
                                                      "score") if c in pd.DataFrame(up).columns]] if up else pd.DataFrame(),
                        hide_index=True)
            b.caption("Pushed down")
            b.dataframe(pd.DataFrame(down)[[c for c in ("token", "delta",
                                                        "score") if c in pd.DataFrame(down).columns]] if down else pd.DataFrame(),
                        hide_index=True)
        if res.generation is not None:
            g = res.generation
            a, b = st.columns(2)
            a.caption("Generated without the edit")
            a.code(g.clean_text or "", language=None)
            b.caption("With the edit (same seed)")
            b.code(g.edited_text or "", language=None)
            st.caption("identical continuations" if g.first_divergence is None else "they part at generated token "
                                                                                    f"{g.first_divergence + 1}")
        if res.neighbours:
            with st.expander("Nearest-neighbour ranks among corpus sentences"):
                st.json(res.neighbours, expanded=False)
        if cards:
            c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
            target = c1.selectbox("Attach as evidence to", [c.card_id for c in cards],
                                  format_func=lambda i: next(c.title for c in cards if c.card_id == i))
            if c2.button("Attach", icon=":material/attach_file:"):
                try:
                    attach_evidence(data.lab(), target, "intervention", res.evidence(), note=res.summary_line(),
                                    author=st.session_state.get("author", ""))
                    st.success("Attached to the card.")
                except LabError as e:
                    st.error(str(e))
        else:
            st.caption("Save a card for this feature to attach interventions to it as evidence.")
    past = interventions_for_feature(data.lab(), run_id, feature, limit=20)
    if len(past):
        with st.expander(f"Earlier interventions on this feature ({len(past)})"):
            st.dataframe(past, hide_index=True)


def render(run_id: str, feature: int, detail: dict[str, Any], info: dict[str, Any]) -> None:
    st.divider()
    left, right = st.columns([1, 1])
    with left:
        try:
            cards = _cards_section(run_id, feature, detail)
        except LabError as e:
            st.error(str(e))
            cards = []
    with right:
        if detail["feature"].get("dead"):
            st.caption("Interventions need a live feature.")
        else:
            try:
                _interventions_section(run_id, feature, detail, cards)
            except LabError as e:
                st.error(str(e))
