"""One run table for the notebook, Runs and SQL pages: short names, metrics pinned next to the id,
a column chooser.

Why: a sweep's run names spell out every setting ("custom: layer=2, k=8, d_sae=2048,
architecture=topk/code"), and at 1280 px those names pushed FVU and transfer off-screen. A run is
named here by what sets it apart in its sweep (the sweep's settings that vary, and the training
domain), and the headline metrics are pinned next to it, so they stay in view however many other
columns there are.
"""

from __future__ import annotations

import re
from typing import Iterable

import pandas as pd
import streamlit as st

from engine.config import ExperimentConfig
from lab_app.formulas import help_for

# The order metrics appear in, next to the run's name; each is pinned when shown.
METRICS = ["fvu", "transfer_ratio", "l0", "dead_frac_train", "dead_frac", "score"]
FORMATS = {"fvu": "%.4f", "r2": "%.3f", "mse": "%.5f", "cosine": "%.3f", "transfer_ratio": "%.2f", "l0": "%.1f",
           "dead_frac_train": "%.3f", "dead_frac": "%.3f", "concept_coverage": "%.2f", "probe_k1": "%.3f",
           "probe_k1_baseline": "%.3f", "overall": "%.3f", "score": "%.2f", "seconds": "%d"}
LABELS = {"fvu": "FVU", "r2": "R²", "mse": "MSE", "cosine": "cosine", "transfer_ratio": "transfer ×", "l0": "L0",
          "dead_frac_train": "dead (train)", "dead_frac": "dead (held-out)", "score": "quality",
          "concept_coverage": "concepts", "probe_k1": "probe k=1", "probe_k1_baseline": "probe k=1 (model)",
          "train_domain": "trained on",
          "trained_on": "trained on", "d_sae": "d_sae", "seconds": "s", "ended_at": "finished", "run_id": "run id",
          "run": "run", "sweep": "sweep"}

_SWEEP_NAME = re.compile(r"^(?P<sweep>[^:]+): (?P<params>.*)/(?P<domain>[^/]+)$")


def _settings(params: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in params.split(", ") if "=" in p]  # type: ignore[misc]


def _default_settings() -> dict[str, str]:
    """The default experiment's sweepable settings, as run names spell them."""
    cfg = ExperimentConfig()
    return {"layer": str(cfg.layer), "hook": cfg.hook, "k": str(cfg.sae.k), "d_sae": str(cfg.sae.d_sae),
            "architecture": str(cfg.sae.architecture)}


def short_names(runs: pd.DataFrame) -> pd.Series:
    """A readable label per run: in a sweep, the settings that differ between its runs (the sweep's
    parameters, as the run names spell them against the sweep's base) and the training domain;
    outside a sweep, the run's own name."""
    names = runs["name"].fillna("").astype(str)
    parsed = names.map(lambda n: _SWEEP_NAME.match(n))
    sweep = runs["sweep_id"] if "sweep_id" in runs else pd.Series([None] * len(runs), index=runs.index)
    out = names.copy()
    groups: dict[str, list] = {}
    for idx, m, sid in zip(runs.index, parsed, sweep):
        if m is not None and isinstance(sid, str):
            groups.setdefault(sid, []).append((idx, m))
    for members in groups.values():
        settings = [dict(_settings(m["params"])) for _, m in members]
        keys = list(dict.fromkeys(k for s in settings for k in s))
        varying = [k for k in keys if len({s.get(k) for s in settings}) > 1]
        defaults = _default_settings()
        for (idx, m), s in zip(members, settings):
            # What varies in the sweep; in a one-configuration sweep, what differs from the default experiment.
            parts = ([f"{k}={s[k]}" for k in varying if k in s]
                     or [f"{k}={v}" for k, v in s.items() if defaults.get(k) != v] or [m["sweep"]])
            out[idx] = f"{', '.join(parts)} · {m['domain']}"
    return out.where(out != "", runs["run_id"] if "run_id" in runs else out)


def _config(col: str, editable: Iterable[str], pinned: bool) -> st.column_config.Column:
    label, hlp = LABELS.get(col, col.replace("_", " ")), help_for(col) or None
    if col in editable:
        return st.column_config.TextColumn(label, help=hlp, width="large" if col == "notes" else "medium")
    if col in FORMATS:
        return st.column_config.NumberColumn(label, format=FORMATS[col], help=hlp, pinned=pinned)
    if col == "run":
        return st.column_config.TextColumn(label, help="what sets this run apart in its sweep, and its training domain; "
                                                       "the full name is in the name column", pinned=True)
    if col == "run_id":
        return st.column_config.TextColumn(label, pinned=pinned)
    return st.column_config.Column(label, help=hlp, pinned=pinned or None)


def with_short_names(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.assign(run=short_names(runs)) if {"name", "run_id"} <= set(runs.columns) else runs


def show(table: pd.DataFrame, key: str, default: list[str], editable: Iterable[str] = (), height: int | str = "auto",
         chooser: bool = True, extra_config: dict | None = None, **kwargs) -> pd.DataFrame:
    """Draw ``table`` with the run's short name and the metrics pinned first, the rest chosen by the
    reader (a column chooser, remembered per table). Returns the table as edited (``editable`` columns)."""
    table = with_short_names(table)
    available = list(table.columns)
    wanted = ["run", *[c for c in default if c in available and c != "run"]] if "run" in available else \
        [c for c in default if c in available]
    if chooser:
        with st.popover("Columns", icon=":material/view_column:"):
            wanted = st.multiselect("Columns shown", available, default=wanted, key=f"{key}_cols",
                                    format_func=lambda c: LABELS.get(c, c.replace("_", " ")))
    lead = [c for c in ("run", "run_id", *METRICS) if c in wanted]
    cols = lead + [c for c in wanted if c not in lead]
    pinned = set(lead)
    config = {c: _config(c, editable, c in pinned) for c in cols}
    config.update(extra_config or {})
    view = table[cols]
    if editable:
        edited = st.data_editor(view, hide_index=True, key=key, height=height, column_config=config,
                                disabled=[c for c in cols if c not in editable], **kwargs)
        return table.assign(**{c: edited[c] for c in editable if c in edited})
    st.dataframe(view, hide_index=True, key=key, height=height, column_config=config, **kwargs)
    return table
