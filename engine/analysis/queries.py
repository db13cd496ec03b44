"""Reads of the feature analysis, as the app, the CLI and the findings make them.

Each function opens one short read-only connection (another process may be writing the lab) and
returns plain Python data or a DataFrame. ``feature_detail`` is the inspector's whole payload in
one connection: every table it reads is sorted by (run_id, feature), so each statement touches
one row group.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pandas as pd

from core.errors import LabError
from core.lab import Lab
from db import connect
from engine.analysis.label_trust import TITLE_SQL, label_title


def _records(cur) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def _require_analysis(con, run_id: str) -> dict[str, Any]:
    if not _has_table(con, "analysis_runs"):  # a lab last opened by code older than the analysis
        raise LabError(f"run '{run_id}' has no feature analysis: run `python -m engine analyze {run_id}`")
    rows = _records(con.execute("SELECT * FROM analysis_runs WHERE run_id = ?", [run_id]))
    if not rows:
        raise LabError(f"run '{run_id}' has no feature analysis: run `python -m engine analyze {run_id}`")
    return _decode_info(rows[0])


def _has_table(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def analysis_info(lab: Lab, run_id: str) -> dict[str, Any] | None:
    """The analysis_runs row of a run (settings and timings decoded), or None when not analysed."""
    with connect(lab, read_only=True) as con:
        if not _has_table(con, "analysis_runs"):
            return None
        try:
            return _require_analysis(con, run_id)
        except LabError:
            return None


def analyzed_runs(lab: Lab) -> pd.DataFrame:
    with connect(lab, read_only=True) as con:
        if not _has_table(con, "analysis_runs"):
            return pd.DataFrame()
        return con.execute(
            """SELECT a.run_id, r.name, r.train_domain, r.layer, r.k, r.d_sae, a.n_live, a.n_dead, a.seconds, a.created_at
               FROM analysis_runs a LEFT JOIN runs r USING (run_id) ORDER BY a.created_at DESC"""
        ).df()


# The inspector's whole payload as one statement: one parse, one plan, one pass per table, and
# the context windows sliced from token_sequences in the same query. Against five statements on
# a 36-run lab this took the call from ~80 ms to ~50 ms (connection included).
_DETAIL_SQL = """
SELECT
  (SELECT list(a) FROM analysis_runs a WHERE a.run_id = $run) AS info,
  (SELECT list(f) FROM features f WHERE f.run_id = $run AND f.feature = $feature) AS feature,
  (SELECT list(s) FROM feature_domain_stats s WHERE s.run_id = $run AND s.feature = $feature) AS domains,
  (SELECT list({'domain': c.domain, 'kind': c.kind, 'rank': c.rank, 'quantile': c.quantile, 'q_lower': c.q_lower,
                'q_upper': c.q_upper, 'activation': c.activation, 'seq': c.seq, 'pos': c.pos, 'held_out': c.held_out,
                'center': c.center, 'acts': c.acts,
                'tokens': string_split(t.tokens, chr(31))[c.window_start + 1 : c.window_start + len(c.acts)]}
               ORDER BY c.domain, c.kind DESC, c.rank)
     FROM feature_context_rows c JOIN token_sequences t ON t.activation_set = c.activation_set AND t.seq = c.seq
     WHERE c.run_id = $run AND c.feature = $feature) AS contexts,
  (SELECT list({'kind': n.kind, 'rank': n.rank, 'neighbour': n.neighbour, 'score': n.score, 'label': g.label,
                'label_score': g.label_score, 'label_reliable': g.label_reliable, 'class': g.class} ORDER BY n.kind, n.rank)
     FROM feature_neighbours n LEFT JOIN features g ON g.run_id = $run AND g.feature = n.neighbour
     WHERE n.run_id = $run AND n.feature = $feature) AS neighbours,
  (SELECT list({'direction': e.direction, 'rank': e.rank, 'token_id': e.token_id, 'token': e.token, 'effect': e.effect}
               ORDER BY e.direction DESC, e.rank)
     FROM feature_token_effects e WHERE e.run_id = $run AND e.feature = $feature) AS effects,
  (SELECT list({'concept': k.concept, 'f1': k.f1, 'precision': k."precision", 'recall': k.recall, 'auroc': k.auroc,
                'threshold': k.threshold, 'n_val_pos': k.n_val_pos} ORDER BY k.f1 DESC, k.concept)
     FROM concept_results k WHERE k.run_id = $run AND k.best_latent = $feature AND k.status = 'evaluated') AS concepts
"""


def feature_detail(lab: Lab, run_id: str, feature: int) -> dict[str, Any]:
    """Everything the inspector shows for one feature, in one query.

    Keys: ``feature`` (the features row, plus ``title``: the label only when it is reliable, else
    "no reliable label (best guess: ...)"), ``concepts`` (ground-truth concepts this feature is the
    best latent for, best F1 first), ``domains`` (per-domain stats with histograms),
    ``contexts`` ({domain: {"top": [...], "quantile": [...]}}, each with tokens, per-token acts and
    the centre index), ``neighbours`` ({"decoder": [...], "activation": [...]}, with the
    neighbours' labels), ``token_effects`` ({"up": [...], "down": [...]}) and ``analysis``."""
    feature = int(feature)
    with connect(lab, read_only=True) as con:
        try:
            info, row, domains, contexts, neighbours, effects, concepts = con.execute(
                _DETAIL_SQL, {"run": run_id, "feature": feature}).fetchall()[0]
        except duckdb.CatalogException:  # a lab last written by code older than the analysis
            info = None
    if not info:
        raise LabError(f"run '{run_id}' has no feature analysis: run `python -m engine analyze {run_id}`")
    info = _decode_info(info[0])
    if not 0 <= feature < int(info["d_sae"]):
        raise LabError(f"feature {feature} does not exist: run '{run_id}' has features 0 to {int(info['d_sae']) - 1}")
    order = {d: i for i, d in enumerate(info["domains"])}
    domains = sorted((dict(d) for d in domains or []), key=lambda d: order.get(d["domain"], len(order)))
    for d in domains:
        d.pop("run_id"), d.pop("feature")
    by_domain: dict[str, dict[str, list]] = {d: {"top": [], "quantile": []} for d in info["domains"]}
    for c in contexts or []:
        c = dict(c)
        by_domain.setdefault(c.pop("domain"), {"top": [], "quantile": []})[c.pop("kind")].append(c)
    nb: dict[str, list] = {"decoder": [], "activation": []}
    for n in neighbours or []:
        n = dict(n)
        n["title"] = label_title(n.get("label"), n.get("label_reliable"))
        nb[n.pop("kind")].append(n)
    te: dict[str, list] = {"up": [], "down": []}
    for e in effects or []:
        e = dict(e)
        te[e.pop("direction")].append(e)
    feat = dict(row[0]) if row else {"feature": feature}
    feat["title"] = label_title(feat.get("label"), feat.get("label_reliable"))
    return {"feature": feat, "domains": domains, "contexts": by_domain, "neighbours": nb, "token_effects": te,
            "concepts": [dict(c) for c in concepts or []], "analysis": info}


def _decode_info(info: dict[str, Any]) -> dict[str, Any]:
    info = dict(info)
    for key in ("settings", "timings"):
        if isinstance(info.get(key), str):
            info[key] = json.loads(info[key])
    return info


def concept_map(lab: Lab, run_id: str, include_dead: bool = False) -> pd.DataFrame:
    """One row per feature: map coordinates (2D = map_x, map_y; 3D adds map_z; t-SNE when computed),
    cluster, class, label and score, and freq / mean_act / freq_sel per domain (``freq_<domain>``...)."""
    with connect(lab, read_only=True) as con:
        info = _require_analysis(con, run_id)
        df = con.execute(
            f"""SELECT feature, map_x, map_y, map_z, tsne_x, tsne_y, tsne3_x, tsne3_y, tsne3_z, cluster, class,
                       leaning_domain, label, label_score, label_reliable, {TITLE_SQL} AS title, freq, max_act, dead
                FROM features WHERE run_id = ? {'' if include_dead else 'AND NOT dead'} ORDER BY feature""", [run_id]).df()
        st = con.execute("SELECT feature, domain, freq, mean_act, freq_sel FROM feature_domain_stats WHERE run_id = ?",
                         [run_id]).df()
    if len(st):
        wide = st.pivot(index="feature", columns="domain", values=["freq", "mean_act", "freq_sel"])
        wide.columns = [f"{stat}_{dom}" for stat, dom in wide.columns]
        order = [f"{s}_{d}" for s in ("freq", "mean_act", "freq_sel") for d in info["domains"] if f"{s}_{d}" in wide.columns]
        df = df.merge(wide[order], left_on="feature", right_index=True, how="left")
    return df


def cluster_summaries(lab: Lab, run_id: str) -> pd.DataFrame:
    """One row per cluster: size, label (three characteristic tokens), top tokens, central features."""
    with connect(lab, read_only=True) as con:
        _require_analysis(con, run_id)
        df = con.execute("SELECT * EXCLUDE (run_id) FROM clusters WHERE run_id = ? ORDER BY cluster", [run_id]).df()
    if len(df):
        df["class_counts"] = df["class_counts"].map(lambda s: json.loads(s) if isinstance(s, str) else s)
    return df


def list_features(lab: Lab, run_id: str, feature_class: str | None = None, cluster: int | None = None,
                  order_by: str = "label_score", limit: int = 100) -> pd.DataFrame:
    """Features of a run, filtered by class and/or cluster, best first by ``order_by``."""
    allowed = {"label_score", "freq", "max_act", "feature", "n_fires"}
    if order_by not in allowed:
        raise LabError(f"cannot order features by '{order_by}': use one of {', '.join(sorted(allowed))}")
    where, params = ["run_id = ?"], [run_id]
    if feature_class:
        where.append("class = ?")
        params.append(feature_class)
    if cluster is not None:
        where.append("cluster = ?")
        params.append(int(cluster))
    direction = "ASC" if order_by == "feature" else "DESC NULLS LAST"
    with connect(lab, read_only=True) as con:
        _require_analysis(con, run_id)
        return con.execute(
            f"""SELECT feature, class, label, label_score, label_reliable, {TITLE_SQL} AS title, freq, max_act, cluster
                FROM features
                WHERE {' AND '.join(where)} ORDER BY {order_by} {direction}, feature LIMIT ?""", params + [int(limit)]).df()


def search_features(lab: Lab, run_id: str, text: str, limit: int = 50) -> pd.DataFrame:
    """Features whose label, label tokens or pushed-up tokens match ``text`` (case-insensitive),
    best label score first; a number finds that feature."""
    text = (text or "").strip()
    if not text:
        raise LabError("empty search: type a word or token, e.g. def, or a feature number")
    with connect(lab, read_only=True) as con:
        _require_analysis(con, run_id)
        if text.isdigit():
            return con.execute(f"SELECT feature, class, label, label_score, {TITLE_SQL} AS title, freq, cluster, "
                               "'feature number' AS matched_by "
                               "FROM features WHERE run_id = ? AND feature = ?", [run_id, int(text)]).df()
        needle = text.lower()
        return con.execute(
            f"""WITH hits AS (
                   SELECT feature, 'label' AS matched_by, 0 AS pri FROM features
                   WHERE run_id = ?
                     AND (list_contains(list_transform(label_tokens, lambda t: lower(trim(t))), ?) OR lower(label) LIKE ?)
                   UNION ALL
                   SELECT feature, 'token effect' AS matched_by, 1 AS pri FROM feature_token_effects
                   WHERE run_id = ? AND direction = 'up' AND lower(trim(token)) = ?)
               SELECT f.feature, f.class, f.label, f.label_score, {TITLE_SQL} AS title,
                      f.freq, f.cluster, min_by(h.matched_by, h.pri) AS matched_by
               FROM hits h JOIN features f ON f.run_id = ? AND f.feature = h.feature
               GROUP BY ALL ORDER BY min(h.pri), f.label_score DESC NULLS LAST, f.feature LIMIT ?""",
            [run_id, needle, f"%{needle}%", run_id, needle, run_id, int(limit)]).df()


def top_texts(lab: Lab, run_id: str, feature: int, domain: str | None = None, n: int = 20) -> list[dict[str, Any]]:
    """The feature's top activating contexts from the corpora (seed 004's "top texts for a feature")."""
    with connect(lab, read_only=True) as con:
        info = _require_analysis(con, run_id)
        if not 0 <= int(feature) < int(info["d_sae"]):
            raise LabError(f"feature {feature} does not exist: run '{run_id}' has features 0 to {int(info['d_sae']) - 1}")
        if domain is not None and domain not in info["domains"]:
            raise LabError(f"unknown domain '{domain}': run '{run_id}' was analysed on {', '.join(info['domains'])}")
        rows = _records(con.execute(
            f"""SELECT domain, rank, activation, seq, pos, held_out, center, tokens, acts FROM feature_contexts
                WHERE run_id = ? AND feature = ? AND kind = 'top' {'AND domain = ?' if domain else ''}
                ORDER BY activation DESC, domain, rank LIMIT ?""",
            [run_id, int(feature)] + ([domain] if domain else []) + [int(n)]))
    for r in rows:
        r["text"] = render_tokens(r["tokens"])
        r["token"] = r["tokens"][r["center"]]
    return rows


def matches(lab: Lab, run_a: str, run_b: str) -> pd.DataFrame:
    """Stored matches of run_a's features to run_b's (``python -m engine match``)."""
    with connect(lab, read_only=True) as con:
        return con.execute(
            """SELECT m.feature_a, m.feature_b, m.cosine, m.mutual, fa.label AS label_a, fb.label AS label_b
               FROM feature_matches m
               LEFT JOIN features fa ON fa.run_id = m.run_a AND fa.feature = m.feature_a
               LEFT JOIN features fb ON fb.run_id = m.run_b AND fb.feature = m.feature_b
               WHERE m.run_a = ? AND m.run_b = ? ORDER BY m.feature_a""", [run_a, run_b]).df()


def render_tokens(tokens: list[str]) -> str:
    """Tokens back to readable text: WordPiece '##' pieces glue to the previous token."""
    out = []
    for t in tokens:
        if t.startswith("##") and out:
            out[-1] += t[2:]
        else:
            out.append(t)
    text = " ".join(out)
    return text if not any(t.startswith((" ", "\n")) for t in tokens) else "".join(tokens)
