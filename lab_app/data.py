"""The app's reads: short read-only queries, cached for a few seconds.

A worker may be writing the lab while the app is open; every read is one short connection that
retries while the file is locked, and results are cached (``st.cache_data(ttl=...)``) so moving
between pages does not hit the database again. Writes (tags, notes, sweeps, cards) clear the cache.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import pandas as pd
import streamlit as st

from core.errors import LabError
from core.lab import Lab
from db import ensure_schema, query
from engine.analysis import queries
from engine.sweeps.leaderboard import configurations as configs
from lab_app.nav import pages


def lab() -> Lab:
    return Lab.at(os.environ.get("SAE_LAB_DIR") or None)


def lab_ready() -> bool:
    return lab().db.exists()


NO_LAB = "No lab database yet: run `make lab` or launch a sweep from the sidebar."


def lab_or_stop(message: str = NO_LAB) -> Lab:
    """The lab a page reads; a page on a lab with no database yet says how to fill it and stops there."""
    if not lab_ready():
        st.info(message)
        st.stop()
    return lab()


def clear() -> None:
    st.cache_data.clear()


@st.cache_data(ttl=3, show_spinner=False)
def runs(lab: Lab) -> pd.DataFrame:
    """Every run with its in-domain metrics, mean transfer ratio, quality score and analysis state.

    ``trained_on`` is what a person reads: the training domain, or "imported (saelens)" for an SAE
    trained elsewhere, whose ``train_domain`` is only the reference domain its metrics are read on."""
    return query(
        lab,
        """
        SELECT r.run_id, r.name, r.status, r.sweep_id, r.group_id, r.model, r.hook, r.layer, r.architecture, r.k, r.d_sae,
               r.train_domain, array_to_string(r.domains, ', ') AS domains, r.tags, r.notes, r.created_at, r.ended_at,
               date_diff('second', r.started_at, coalesce(r.ended_at, r.heartbeat_at)) AS seconds,
               m.fvu, m.r2, m.mse, m.cosine, m.l0, m.dead_frac, m.dead_frac_train, m.transfer_ratio,
               m.concept_coverage, m.probe_k1, m.probe_k1_baseline,
               q.score, q.rating, coalesce(json_array_length(q.details->'$.warnings'), 0) AS quality_warnings,
               r.code_version, r.error,
               r.run_id IN (SELECT run_id FROM analysis_runs) AS analysed,
               imp.source_format AS imported_from,
               CASE WHEN imp.run_id IS NULL THEN r.train_domain
                    ELSE 'imported (' || imp.source_format || ')' END AS trained_on
        FROM runs r LEFT JOIN run_metrics m USING (run_id) LEFT JOIN quality_scores q USING (run_id)
             LEFT JOIN run_imports imp USING (run_id)
        ORDER BY r.created_at DESC
        """,
    )


@st.cache_data(ttl=10, show_spinner=False)
def step_metrics(lab: Lab, run_ids: tuple[str, ...], names: tuple[str, ...]) -> pd.DataFrame:
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "step", "tokens", "name", "value"])
    return query(
        lab,
        "SELECT run_id, step, tokens, name, value FROM step_metrics WHERE run_id IN (SELECT unnest(?)) AND name IN (SELECT "
        "unnest(?)) ORDER BY run_id, step",
        [list(run_ids), list(names)],
    )


@st.cache_data(ttl=10, show_spinner=False)
def eval_rows(lab: Lab, group_id: str) -> pd.DataFrame:
    return query(
        lab,
        """SELECT r.run_id, r.train_domain, e.eval_domain, e.mse, e.fvu, e.r2, e.cosine, e.l0, e.transfer_ratio,
                  r.run_id IN (SELECT run_id FROM run_imports) AS imported
           FROM runs r JOIN eval_results e USING (run_id) WHERE r.group_id = ? ORDER BY r.train_domain, e.eval_domain""",
        [group_id],
    )


@st.cache_data(ttl=10, show_spinner=False)
def splice_rows(lab: Lab, run_id: str) -> pd.DataFrame:
    return query(lab, "SELECT * FROM splice_results WHERE run_id = ?", [run_id])


@st.cache_data(ttl=10, show_spinner=False)
def quality(lab: Lab, run_id: str) -> dict[str, Any] | None:
    df = query(lab, "SELECT * FROM quality_scores WHERE run_id = ?", [run_id])
    return None if df.empty else df.iloc[0].to_dict()


@st.cache_data(ttl=10, show_spinner=False)
def run_config(lab: Lab, run_id: str) -> dict[str, Any]:
    df = query(lab, "SELECT config FROM runs WHERE run_id = ?", [run_id])
    return {} if df.empty else json.loads(df.iloc[0, 0])


@st.cache_data(ttl=5, show_spinner=False)
def sweeps(lab: Lab) -> pd.DataFrame:
    return query(
        lab,
        """SELECT s.sweep_id, s.name, s.method, s.metric, s.goal, s.n_jobs, s.created_at,
                  count(*) FILTER (WHERE j.status = 'FINISHED') AS finished
           FROM sweeps s LEFT JOIN jobs j USING (sweep_id) GROUP BY ALL ORDER BY s.created_at DESC""",
    )


@st.cache_data(ttl=10, show_spinner=False)
def configurations(lab: Lab, sweep_id: str | None) -> pd.DataFrame:
    return configs(lab, sweep_id)


def jobs_live(lab: Lab) -> pd.DataFrame:
    """Not cached: the live panel wants the latest state every refresh."""
    # deferred: loads torch, which the app's pages start without
    from engine.sweeps.queue import job_statuses

    return job_statuses(lab)


@st.cache_data(ttl=30, show_spinner=False)
def analysed_runs(lab: Lab) -> pd.DataFrame:
    return queries.analyzed_runs(lab)


@st.cache_data(ttl=60, show_spinner=False)
def feature_detail(lab: Lab, run_id: str, feature: int, _stamp: Any = None) -> dict[str, Any]:
    return queries.feature_detail(lab, run_id, int(feature))


@st.cache_data(ttl=60, show_spinner=False)
def best_feature(lab: Lab, run_id: str, _stamp: Any = None) -> int:
    """The feature the inspector opens on without a deep link: the best-labelled one, not feature 0."""
    top = queries.list_features(lab, run_id, limit=1)
    return int(top.iloc[0]["feature"]) if len(top) else 0


@st.cache_data(ttl=60, show_spinner=False)
def concept_map(lab: Lab, run_id: str, _stamp: Any = None) -> pd.DataFrame:
    return queries.concept_map(lab, run_id)


@st.cache_data(ttl=60, show_spinner=False)
def cluster_summaries(lab: Lab, run_id: str, _stamp: Any = None) -> pd.DataFrame:
    return queries.cluster_summaries(lab, run_id)


@st.cache_data(ttl=30, show_spinner=False)
def search_features(lab: Lab, run_id: str, text: str) -> pd.DataFrame:
    return queries.search_features(lab, run_id, text)


@st.cache_data(ttl=30, show_spinner=False)
def schema(lab: Lab) -> pd.DataFrame:
    return query(
        lab,
        """WITH objects AS (SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = 'main'
                           UNION ALL SELECT view_name, comment FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal)
           SELECT o.table_name, o.comment AS table_comment, c.column_name, c.data_type, c.comment AS column_comment
           FROM objects o JOIN duckdb_columns() c USING (table_name)
           WHERE c.schema_name = 'main' ORDER BY o.table_name, c.column_index""",
    )


def lab_path_label() -> str:
    return str(lab().root.resolve())


@st.cache_resource(show_spinner=False)
def _schema_checked(lab: Lab) -> bool:
    """Check the lab's schema once per app process: a read when it is current (the app then works
    on a lab the user cannot write); an older schema is brought up to date (a brief write)."""
    ensure_schema(lab)
    return True


def ensure_schema_once() -> None:
    """An older schema on a lab this user cannot write stops the app with that one line."""
    if not lab_ready():
        return
    try:
        _schema_checked(lab())
    except LabError as e:
        st.error(str(e))
        st.stop()


def page(name: str):
    """The st.Page object for page links."""
    return pages()[name]


def inspector_link(run_id: str, feature: int, label: str | None = None, key: str | None = None) -> None:
    st.page_link(page("inspector"), label=label or f"feature {feature}",
                 query_params={"run": run_id, "feature": str(int(feature))},
                 icon=":material/open_in_new:")


@st.cache_data(ttl=600, show_spinner="Matching decoder directions…")
def _matches(lab: Lab, run_a: str, run_b: str) -> tuple[list[int], list[float]]:
    """All of run_a's best counterparts in run_b (one decoder-cosine product; read-only)."""
    # deferred: loads torch, which the app's pages start without
    from engine.analysis.matching import match_runs

    m = match_runs(lab, run_a, run_b, store=False)
    return m.best.tolist(), m.cosine.tolist()


def match_in_other_run(lab: Lab, run_a: str, run_b: str, feature: int) -> dict[str, Any]:
    best, cos = _matches(lab, run_a, run_b)
    return {"feature_b": int(best[feature]), "cosine": float(cos[feature])}


@st.cache_resource(show_spinner=False)
def _warm_started() -> bool:
    """Import the heavy modules and load the latest run's model in a plain thread (no st.* calls), so the
    first inspector, probe or intervention does not wait for them."""

    def warm() -> None:
        try:
            # deferred: these load torch: importing them in this background thread is the point
            import engine.analysis.probe  # the inspector's and probe's imports, paid once here
            import engine.interventions  # noqa: F401  (imported to pay its cost here, not for its names)
            from engine.collection.models import load_model, resolve_model
            from engine.device import pick_device

            df = query(lab(), "SELECT model FROM runs WHERE status = 'FINISHED' ORDER BY ended_at DESC LIMIT 1")
            if len(df):
                load_model(resolve_model(df.iloc[0, 0]), pick_device("cpu"))
        except Exception:  # a warm-up is best effort
            pass

    threading.Thread(target=warm, daemon=True, name="warm-model").start()
    return True


def warm_model_in_background() -> None:
    if lab_ready():
        _warm_started()


@st.cache_data(ttl=30, show_spinner=False)
def concept_results(lab: Lab, run_id: str) -> pd.DataFrame:
    """The run's ground-truth concept table (engine/analysis/concepts), best F1 first."""
    return query(lab, """SELECT concept, kind, status, best_latent, f1, "precision", recall, auroc, probe_k1, probe_k2, probe_k5,
                                    baseline_k1, baseline_k2, baseline_k5, baseline_f1, latents_to_90, n_val_pos, description
                             FROM concept_results WHERE run_id = ?
                             ORDER BY status = 'evaluated' DESC, f1 DESC NULLS LAST, concept""",
                 [run_id])
