"""The sidebar's "Import an SAE": a folder path, a preview of what was recognised, then the import.

The preview reads the folder and checks it against the model (``engine.imports.conduct.plan_import``)
and writes nothing, so a wrong folder, width or hook is refused in one line before anything happens.
The import itself runs as ``python -m engine import`` in its own process (``engine.imports.launch``),
like a sweep's jobs: the page stays usable, and a fragment polls until it ends, then links the new
run's features in the inspector.
"""

from __future__ import annotations

import streamlit as st

from core.errors import LabError
from engine.config import HOOK_POINTS
from lab_app import data
from lab_app.render import escape_markdown

FROM_SAE = "auto"
SHOWN = ("format", "architecture", "d_in", "d_sae", "hook", "layer", "k")


def _layer(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise LabError(f"layer '{text}' must be a whole number, or empty to use the SAE's own") from None


def _inputs() -> tuple[str, str | None, str]:
    path = st.text_input("SAE folder", key="imp_path", placeholder="/path/to/the/sae",
                         help="A SAELens (cfg.json + sae_weights.safetensors), sparsify (cfg.json + sae.safetensors, or "
                              "one such sub-folder per hookpoint) or dictionary_learning (ae.pt + config.json) folder")
    c1, c2 = st.columns([3, 2])
    hook = c1.selectbox("Hook", [FROM_SAE, *HOOK_POINTS], key="imp_hook",
                        help="auto: the hook point the SAE's own config names (TransformerLens or module path)")
    layer = c2.text_input("Layer", "", key="imp_layer", placeholder="auto", help="empty: the layer the SAE's config names")
    return path.strip(), None if hook == FROM_SAE else hook, layer


def _preview(path: str, hook: str | None, layer_text: str) -> dict:
    # deferred: reading SAE weights loads torch and safetensors, which the app's pages start without
    from engine.imports.conduct import plan_import

    try:
        if not path:
            raise LabError("give the folder the SAE was saved in")
        plan = plan_import(data.lab(), path, hook=hook, layer=_layer(layer_text))
    except LabError as e:
        return {"key": (path, hook, layer_text), "error": str(e)}
    return {"key": (path, hook, layer_text), "summary": plan.summary(), "notes": plan.notes, "existing": plan.existing,
            "hook": plan.hook, "layer": plan.layer}


def _show(preview: dict) -> None:
    if "error" in preview:
        st.error(f"error: {escape_markdown(preview['error'], one_line=True)}")
        return
    s = preview["summary"]
    st.dataframe([{"": k, "recognised": str(s[k])} for k in SHOWN], hide_index=True, key="imp_table",
                 column_config={"": st.column_config.TextColumn(width="small")})
    for note in preview["notes"]:
        st.caption(f"note: {escape_markdown(note, one_line=True)}")
    if preview["existing"]:
        st.info(f"Already imported as run {preview['existing']}: importing again adds nothing.")
        data.inspector_link(preview["existing"], data.best_feature(data.lab(), preview["existing"]), label="its features")


def panel() -> None:
    with st.expander("Import an SAE", icon=":material/input:", expanded=False):
        path, hook, layer_text = _inputs()
        if st.button("Preview", key="imp_preview", icon=":material/visibility:"):
            st.session_state["imp_preview_data"] = _preview(path, hook, layer_text)
            st.session_state.pop("imp_message", None)
        preview = st.session_state.get("imp_preview_data")
        current = preview is not None and preview["key"] == (path, hook, layer_text)
        if preview and current:
            _show(preview)
            ready = "error" not in preview and not preview["existing"] and "imp_job" not in st.session_state
            if ready and st.button("Import", type="primary", key="imp_go", icon=":material/download:"):
                # deferred: the launcher's module is only needed once an import starts
                from engine.imports.launch import start_import

                st.session_state["imp_job"] = start_import(data.lab(), path, preview["hook"], preview["layer"])
        elif preview:
            st.caption("The inputs changed since the preview: preview again.")
        status()


@st.fragment(run_every="2s")
def status() -> None:
    """The running import, then how it ended (polled: the import is another process)."""
    job = st.session_state.get("imp_job")
    if job is not None:
        # deferred: the launcher's module is only needed while an import runs
        from engine.imports.launch import result

        res = result(job)
        if not res.done:
            st.caption(f"Importing {escape_markdown(job.what, one_line=True)}: evaluating on every domain, then the feature "
                       "analysis…")
            return
        del st.session_state["imp_job"]
        st.session_state["imp_message"] = ("ok" if res.ok else "error", res.message, res.run_id)
        st.session_state.pop("imp_preview_data", None)
        data.clear()
        st.rerun(scope="app")
    msg = st.session_state.get("imp_message")
    if msg:
        kind, text, run_id = msg
        if kind == "ok":
            st.success(escape_markdown(text.split(": FVU")[0] if "as run" in text else text, one_line=True))
            if run_id:
                data.inspector_link(run_id, data.best_feature(data.lab(), run_id), label="open its features")
        else:
            st.error(f"error: {escape_markdown(text, one_line=True)}")
