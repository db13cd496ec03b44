"""Findings: curated feature labels with their evidence and history.

Edits are checked against the revision the form was opened at: if another tab saved in between,
the save is refused with the other revision named, and nothing is overwritten.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import LabError
from findings import (
    CONFIDENCES,
    STATUSES,
    CardChangedError,
    card_evidence,
    card_history,
    card_markdown,
    delete_card,
    export_json,
    export_markdown,
    export_registry,
    get_card,
    import_json,
    import_registry,
    live_status,
    restore_card,
    search_cards,
    update_card,
)
from findings.render import context_html
from lab_app import access, data

DIFF_FIELDS = ["title", "claim", "label", "description", "confidence", "status", "tags", "notes", "examples", "author",
               "features", "evidence", "deleted_at"]


def _field_text(card, name: str) -> str:
    value = getattr(card, name)
    if name == "features":
        return "; ".join(f"{f.run_id} feature {f.feature}" for f in value)
    if name == "evidence":
        return "; ".join(f"{e.kind}" for e in value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def revision_diff(before, after) -> pd.DataFrame:
    """Field by field: each field whose text differs between two revisions, before and after (shown as
    text in a table cell, never rendered as Markdown or HTML)."""
    rows = [{"field": f, "before": _field_text(before, f), "after": _field_text(after, f)} for f in DIFF_FIELDS]
    return pd.DataFrame([r for r in rows if r["before"] != r["after"]], columns=["field", "before", "after"])


access.require()  # the access gate, before this page draws anything (why on every page: lab_app/access.py)

st.title("Findings")
lab = data.lab_or_stop()

# -- search -----------------------------------------------------------------------------------------
with st.container(horizontal=True):
    text = st.text_input("Search", key="fd_text", placeholder="words in the title, claim, label, description, notes or tags")
    status = st.selectbox("Status", ["any", *STATUSES], key="fd_status")
    tag = st.text_input("Tag", key="fd_tag")
    run = st.text_input("Run", key="fd_run")
    feature = st.text_input("Feature", key="fd_feature")
    deleted = st.toggle("Show deleted", key="fd_deleted")
try:
    feat = int(feature) if feature.strip() else None
except ValueError:
    st.error(f"feature '{feature}' is not a number")
    feat = None
try:
    cards = search_cards(lab, text=text or None, tag=tag or None, status=None if status == "any" else status,
                         run_id=run or None, feature=feat, include_deleted=deleted)
except LabError as e:
    st.error(str(e))
    cards = []

left, right = st.columns([2, 3])
with left:
    st.caption(f"{len(cards)} card(s)")
    table = pd.DataFrame([{"title": c.title, "status": c.status, "confidence": c.confidence, "tags": ", ".join(c.tags),
                           "features": ", ".join(f"{f.run_id[-6:]}:{f.feature}" for f in c.features), "rev": c.revision,
                           "updated": c.updated_at[:19].replace("T", " "), "deleted": c.deleted,
                           "card_id": c.card_id} for c in cards])
    picked = None
    if len(table):
        event = st.dataframe(table.drop(columns=["card_id"]), hide_index=True, key="fd_table", on_select="rerun",
                             selection_mode="single-row",
                             column_config={"title": st.column_config.TextColumn("title", width="medium"),
                                            "status": st.column_config.TextColumn("status", width=90),
                                            "confidence": st.column_config.TextColumn("confidence", width=90),
                                            "rev": st.column_config.NumberColumn("rev", width=45)})
        rows = event.selection.rows if hasattr(event, "selection") else []
        picked = table.iloc[rows[0]]["card_id"] if rows else None
    else:
        st.info("No cards yet: open a feature in the inspector and press Save card.")
    card_id = picked or st.query_params.get("card") or (table.iloc[0]["card_id"] if len(table) else None)

    with st.expander("Export and import", icon=":material/import_export:"):
        ids = [c.card_id for c in cards] or None
        st.download_button("Cards as JSON (with history and evidence)", json.dumps(export_json(lab, ids), indent=2).encode(),
                           "findings.json", "application/json", key="fd_dl_json")
        st.download_button("Feature registry (seed 004 JSON)", json.dumps(export_registry(lab, ids), indent=2).encode(),
                           "sae_features.json", "application/json", key="fd_dl_reg")
        if cards:
            with tempfile.TemporaryDirectory() as tmp:
                files = export_markdown(lab, ids, tmp)
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w") as z:
                    for f in files:
                        z.write(f, Path(f).name)
            st.download_button("Cards as Markdown (one file each, zipped)", buf.getvalue(), "findings-markdown.zip",
                               "application/zip", key="fd_dl_md")
        up = st.file_uploader("Import a JSON file", type=["json"], key="fd_upload")
        kind = st.radio("It holds", ["cards exported from a lab", "a seed-004 feature registry"], key="fd_kind")
        reg_run = st.text_input("Registry run id (features are indices of this run)",
                                key="fd_reg_run") if kind.startswith("a seed") else None
        if up is not None and st.button("Import", key="fd_import", icon=":material/upload:"):
            try:
                payload = json.loads(up.getvalue().decode("utf-8"))
                res = (import_json(lab, payload) if kind.startswith("cards")
                       else import_registry(lab, payload, reg_run or None, author=st.session_state.get("author", "")))
                st.success(f"Imported: {res}")
            except (LabError, json.JSONDecodeError, UnicodeDecodeError) as e:
                st.error(f"import refused: {e}")

with right:
    if not card_id:
        st.stop()
    try:
        card = get_card(lab, card_id)
    except LabError as e:
        st.error(str(e))
        st.stop()
    st.query_params["card"] = card.card_id
    history = card_history(lab, card.card_id)
    view, edit, hist = st.tabs(["Card", "Edit", f"History ({len(history)} revisions)"])

    with view:
        if card.deleted:
            st.warning(f"This card was deleted at {card.deleted_at[:19]}.")
        for ls in live_status(lab, card):
            state = {"live": "the live feature",
                     "reanalysed": "the live feature (re-analysed since this card's evidence was frozen)",
                     "no-analysis": "the run (no analysis now)",
                     "run-deleted": "run deleted: the frozen evidence below is all that is left"}[ls["state"]]
            if ls["state"] in ("live", "reanalysed"):
                data.inspector_link(ls["run_id"], ls["feature"], label=f"Open {state}: {ls['run_id']} feature {ls['feature']}")
            else:
                st.caption(f"{ls['run_id']} feature {ls['feature']}: {state}")
        snaps = card_evidence(lab, card)
        st.markdown(card_markdown(card, snaps, None, top_n=5))  # every user string is escaped by card_markdown
        for ref in card.features:
            detail = ((snaps.get(ref.snapshot_id or "") or {}).get("data") or {}).get("detail") or {}
            for dname, cset in (detail.get("contexts") or {}).items():
                top = cset.get("top") or []
                if top:
                    st.caption(f"Frozen top contexts on {dname} (feature {ref.feature})")
                    peak = max(c["activation"] for c in top) or 1.0
                    for c in top[:5]:
                        st.markdown(context_html(c["tokens"], c["acts"], c["center"], peak), unsafe_allow_html=True)

    with edit:
        base_key = f"fd_base_{card.card_id}"
        if base_key not in st.session_state:
            st.session_state[base_key] = card.revision  # the revision this tab's edits are based on
        base = st.session_state[base_key]
        shown = get_card(lab, card.card_id, base) if base != card.revision else card
        if base != card.revision:
            st.warning(f"This card was saved elsewhere (now revision {card.revision}, by {card.updated_by or 'someone'}); "
                       f"your form still shows revision {base}.")
            if st.button("Reload the latest revision", key="fd_reload"):
                del st.session_state[base_key]
                st.rerun()
        with st.form(f"fd_edit_{card.card_id}_{base}"):
            title = st.text_input("Title", shown.title, max_chars=200)
            claim = st.text_area("Claim", shown.claim, height=70)
            label = st.text_input("Label", shown.label)
            description = st.text_area("Description", shown.description, height=120)
            c1, c2 = st.columns(2)
            confidence = c1.selectbox("Confidence", CONFIDENCES, index=CONFIDENCES.index(shown.confidence))
            status_new = c2.selectbox("Status", STATUSES, index=STATUSES.index(shown.status))
            tags = st.text_input("Tags", ", ".join(shown.tags))
            notes = st.text_area("Notes", shown.notes, height=100)
            c3, c4 = st.columns(2)
            author = c3.text_input("Your name", st.session_state.get("author", ""))
            note = c4.text_input("What changed (optional)")
            refresh = st.checkbox("Re-freeze evidence from the live analysis", help="Only for features whose run still exists.")
            if st.form_submit_button("Save", type="primary", icon=":material/save:"):
                try:
                    new = update_card(lab, card.card_id, base, author=author, note=note, refresh_evidence=refresh,
                                      title=title, claim=claim, label=label, description=description, confidence=confidence,
                                      status=status_new, tags=[t.strip() for t in tags.split(",") if t.strip()], notes=notes)
                    st.session_state[base_key] = new.revision
                    st.session_state["author"] = author
                    st.success(f"Saved revision {new.revision}.")
                    st.rerun()
                except CardChangedError as e:
                    st.error(str(e))
                except LabError as e:
                    st.error(str(e))
        if card.deleted:
            if st.button("Restore this card", key="fd_restore", icon=":material/restore:"):
                restore_card(lab, card.card_id, card.revision, author=st.session_state.get("author", ""))
                st.session_state.pop(base_key, None)
                st.rerun()
        else:
            with st.popover("Delete this card", icon=":material/delete:"):
                st.caption("The card is hidden and kept with its history; you can restore it.")
                if st.button("Delete", key="fd_delete", type="primary"):
                    try:
                        delete_card(lab, card.card_id, base, author=st.session_state.get("author", ""))
                        st.session_state.pop(base_key, None)
                        st.rerun()
                    except LabError as e:
                        st.error(str(e))

    with hist:
        hist_df = pd.DataFrame([{"revision": r.revision, "action": r.action, "author": r.author,
                                 "when": r.edited_at[:19].replace("T", " "),
                                 "changed": ", ".join(r.changed), "note": r.note} for r in history])
        st.dataframe(hist_df, hide_index=True, key="fd_hist",
                     column_config={"changed": st.column_config.TextColumn("changed", width="medium"),
                                    "note": st.column_config.TextColumn("note", width="medium")})
        revisions = [r.revision for r in history][::-1]  # newest first: the picker opens on the card as it is now
        c1, c2 = st.columns(2)
        rev = c1.selectbox("Show the card as it was at revision", revisions, index=0, key="fd_rev")
        older = [r for r in revisions if r < rev]
        against = c2.selectbox("Compare with revision", older or [None], index=0, key="fd_rev_against",
                               format_func=lambda r: "— (the first revision)" if r is None else str(r),
                               disabled=not older)
        old = get_card(lab, card.card_id, int(rev))
        if against is not None:
            base_card = get_card(lab, card.card_id, int(against))
            diff = revision_diff(base_card, old)
            st.markdown(f"**What changed from revision {against} to {rev}** ({len(diff)} field(s))")
            if len(diff):
                st.dataframe(diff, hide_index=True, key="fd_diff",
                             column_config={"field": st.column_config.TextColumn("field", width="small"),
                                            "before": st.column_config.TextColumn(f"revision {against}", width="large"),
                                            "after": st.column_config.TextColumn(f"revision {rev}", width="large")})
            else:
                st.caption("No field differs.")
        st.markdown(card_markdown(old, card_evidence(lab, old), None, top_n=3))
