"""``analyze_run``: the whole feature analysis of one run, written to DuckDB in one transaction.

Order matters only for cost: the one sparse encoding of every token (``codes``) feeds every
stage, so the analysis costs about one pass of the SAE's encoder over the data plus sorting and
counting a few million entries.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from core.errors import LabError, first_line
from core.lab import Lab, code_version
from db import utcnow
from engine.analysis.codes import RunData, load_run_data
from engine.analysis.concept_map import ConceptMap, cluster_tokens, compute_map
from engine.analysis.concepts.run import ConceptReport, evaluate_run
from engine.analysis.concepts.table import concept_table
from engine.analysis.config import AnalysisConfig
from engine.analysis.contexts import context_table, domain_contexts, sequence_table
from engine.analysis.label_trust import CHANCE
from engine.analysis.labels import Labels, compute_labels
from engine.analysis.neighbours import Neighbours, compute_neighbours
from engine.analysis.quality_update import rescore_quality
from engine.analysis.stats import FeatureStats, compute_stats
from engine.analysis.token_effects import TokenEffects, compute_token_effects, effect_matrix, read_effect_matrix
from engine.analysis.vocab import Vocab, load_vocab
from engine.analysis.write import replace_analysis
from engine.collection.models import ModelInfo, load_model, resolve_model
from engine.evaluation.codes import CODES


class _Clock:
    def __init__(self, progress: bool):
        self.t0 = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.progress = progress

    def lap(self, name: str) -> None:
        """Time one stage; the stages are stored with the analysis (analysis_runs.timings), and printed
        once, as one line naming the run, when the analysis ends (``done``), not as a line per stage."""
        now = time.perf_counter()
        self.timings[name] = round(now - self.last, 3)
        self.last = now

    def done(self, run_id: str, n_live: int) -> None:
        if self.progress:
            slowest = sorted(self.timings.items(), key=lambda kv: -kv[1])[:2]
            print(f"run {run_id}: feature analysis done in {self.total:.1f} s ({n_live:,} live features; slowest stages: "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in slowest) + ")", file=sys.stderr, flush=True)

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def _prepare_model(name: str) -> tuple[ModelInfo, Vocab, torch.Tensor | None, str]:
    """The run's vocabulary and token-effect matrix.

    The matrix is read from the weights file when it can be: building the transformers model only
    to take one tensor from it costs ~3 s of imports on a cold start (measured). (Running this on
    a thread beside the encoding pass gained nothing: the imports hold the GIL.)"""
    # deferred: transformers is heavy
    from transformers import AutoTokenizer

    info = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(info.path, local_files_only=info.local_files_only)
    except Exception:
        tokenizer = None
    matrix, source = (None, "")
    if tokenizer is not None:
        matrix, source = read_effect_matrix(info.path, info.is_causal, info.d_model, len(tokenizer))
    if tokenizer is None or matrix is None:
        loaded = load_model(info, torch.device("cpu"))
        tokenizer = loaded.tokenizer
        matrix, source = effect_matrix(loaded.model, info.is_causal)
    vocab = load_vocab(tokenizer, cache_key=info.identity)
    return info, vocab, matrix, source


def analyze_run(lab: Lab, run_id: str, progress: bool = False, seed: int = 0,
                config: AnalysisConfig | None = None) -> dict[str, Any]:
    """Analyse a run's features and replace its analysis in the database; returns a summary."""
    cfg = (config or AnalysisConfig(seed=seed)).validate()
    clock = _Clock(progress)
    torch.manual_seed(cfg.seed)
    try:
        data = load_run_data(lab, run_id, cfg.chunk_rows)
    finally:
        CODES.drop(run_id)  # evaluation's held-out codes (if it left any) are read once, then released
    clock.lap("encode")
    # The concept evaluation runs after the other stages, in this thread: on a second thread beside
    # them (it needs only the codes) the shared 2-core VM gained nothing and lost 10 s on a cold start
    # (GIL and BLAS-limit contention; measured side by side with `bench analysis`).
    info, vocab, matrix, source = _prepare_model(data.config.model)
    clock.lap("model")
    F = data.d_sae
    stats = compute_stats(data.domains, F, cfg.hist_bins, cfg.class_threshold)
    clock.lap("stats")
    labels = compute_labels(data.domains, F, vocab, cfg.label_max_tokens, cfg.label_min_count, cfg.label_min_share,
                            cfg.label_min_val_fires)
    clock.lap("labels")
    rng = np.random.default_rng(cfg.seed)
    parts = [domain_contexts(dc, F, stats.max_act[i], cfg, rng) for i, dc in enumerate(data.domains)]
    contexts = context_table(run_id, data.domains, parts)
    del parts
    clock.lap("contexts")
    live = ~stats.dead
    neighbours = compute_neighbours(data.sae.W_dec, data.domains, live, cfg.n_neighbours)
    clock.lap("neighbours")
    effects = compute_token_effects(data.sae.W_dec, matrix, source, vocab, cfg.n_token_effects)
    clock.lap("token_effects")
    W = data.sae.W_dec.detach().float().numpy()
    cmap = compute_map(W, stats, cfg.n_clusters, cfg.cluster_dims, cfg.seed, cfg.map_stats_scaling, cfg.tsne,
                       cfg.kmeans_n_init, cfg.central_features)
    ctoks = cluster_tokens(cmap.cluster, labels.fire_tokens, labels.corpus_tokens, cfg.cluster_tokens, vocab.excluded)
    clock.lap("concept_map")
    concepts = _concepts(lab, data, cfg, progress)
    clock.lap("concepts")
    tables = {
        "features": features_table(run_id, stats, labels, cmap),
        "feature_domain_stats": domain_stats_table(run_id, stats, labels),
        "feature_context_rows": contexts,
        "feature_neighbours": neighbours_table(run_id, neighbours),
        "feature_token_effects": token_effects_table(run_id, effects, vocab),
        "clusters": clusters_table(run_id, cmap, ctoks, vocab, stats, labels),
        "concept_results": concept_table(run_id, concepts.results) if concepts else None,
    }
    clock.lap("tables")
    settings = {**cfg.to_dict(), "token_effect_source": effects.source,
                "store_keys": {dc.name: dc.store_key for dc in data.domains}}

    def final_row() -> pa.Table:
        clock.lap("write")
        return pa.table({
            "run_id": [run_id], "domains": [data.domain_names], "d_sae": pa.array([F], pa.int32()),
            "n_live": pa.array([int(live.sum())], pa.int32()), "n_dead": pa.array([int((~live).sum())], pa.int32()),
            "settings": [json.dumps(settings, sort_keys=True)], "timings": [json.dumps(clock.timings)],
            "seconds": [clock.total], "code_version": [code_version()], "created_at": [utcnow()],
        })

    sequences = {dc.store_key: (lambda dc=dc: sequence_table(dc, vocab)) for dc in data.domains}
    replace_analysis(lab, run_id, tables, final_row, sequences)
    clock.lap("commit")
    clock.done(run_id, int(live.sum()))
    quality = rescore_quality(lab, run_id, data.resolved)
    out = summarize(data, stats, labels, cmap, contexts.num_rows, clock, effects.source)
    out["labels_reliable"] = int(labels.reliable.sum())
    out["reused_code_rows"] = sum(dc.reused_rows for dc in data.domains)
    out["concepts"] = concepts.summary if concepts else None
    out["quality"] = quality
    if concepts:
        out["timings"].update(concepts.timings)
        out["notes"] += concepts.notes
    return out


def _concepts(lab: Lab, data: RunData, cfg: AnalysisConfig, progress: bool) -> ConceptReport | None:
    """The ground-truth concept evaluation; a run whose text cannot be rebuilt is analysed without it."""
    if not cfg.concepts:
        return None
    try:
        return evaluate_run(lab, data, seed=cfg.seed, progress=progress)
    except LabError as e:
        data.notes.append(f"concept evaluation skipped: {e}")
        return None


def analyze_after_training(lab: Lab, run_id: str, progress: bool = False) -> dict[str, Any] | None:
    """The automatic analysis at the end of a training run: never turns a finished run into a failed one.

    A failure (say, the database held by another process for a minute) leaves the run FINISHED
    without an analysis and says so on one line; ``python -m engine analyze RUN`` (or ``--all``)
    catches up later."""
    try:
        return analyze_run(lab, run_id, progress=progress)
    except Exception as e:  # reported, not raised: the run itself succeeded
        first = first_line(e)
        print(f"warning: run {run_id} finished but its feature analysis failed ({first}): "
              f"run `python -m engine analyze {run_id}` to retry", file=sys.stderr)
        return None


def summarize(data: RunData, stats: FeatureStats, labels: Labels, cmap: ConceptMap, n_contexts: int, clock: _Clock,
              effect_source: str) -> dict[str, Any]:
    cls, _ = stats.classes()
    names, counts = np.unique(cls.astype(str), return_counts=True)
    scored = labels.score[~np.isnan(labels.score)]
    return {
        "run_id": data.run_id,
        "domains": data.domain_names,
        "d_sae": data.d_sae,
        "n_live": int((~stats.dead).sum()),
        "n_dead": int(stats.dead.sum()),
        "classes": dict(zip(names.tolist(), counts.tolist())),
        "n_contexts": int(n_contexts),
        "labelled": int(len(scored)),
        "median_label_score": float(np.median(scored)) if len(scored) else None,
        "labels_above_0_9": int((scored >= 0.9).sum()),
        "n_clusters": int(cmap.cluster.max() + 1) if (cmap.cluster >= 0).any() else 0,
        "map_explained_variance": [round(x, 4) for x in cmap.explained[:3]],
        "token_effect_source": effect_source,
        "timings": dict(clock.timings),
        "seconds": round(clock.total, 3),
        "notes": list(data.notes),
    }


# -- Arrow tables ---------------------------------------------------------------------------------
def _nullable(values: np.ndarray, type_: pa.DataType = pa.float64()) -> pa.Array:
    v = np.asarray(values, dtype=np.float64)
    return pa.array(v, type=type_, mask=~np.isfinite(v))


def _lists(ids: np.ndarray, type_: pa.DataType) -> pa.Array:
    """Rows of a -1 padded [n, m] array as lists without the padding."""
    keep = ids >= 0
    offsets = np.zeros(len(ids) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(keep.sum(1))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids[keep], type=type_))


def features_table(run_id: str, stats: FeatureStats, labels: Labels, cmap: ConceptMap) -> pa.Table:
    F = stats.d_sae
    cls, lean = stats.classes()
    n_fires = stats.n_fires.sum(0)
    tot = max(int(stats.n_tokens.sum()), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_act = np.where(n_fires > 0, stats.sum_act.sum(0) / np.maximum(n_fires, 1), np.nan)
    keep = labels.token_ids >= 0
    start_bucket = labels.fire_tokens.shape[1] - 1  # "no previous token" is stored as -1
    label_ids = np.where(labels.token_ids == start_bucket, -1, labels.token_ids)[keep].astype(np.int32)
    ids_offsets = np.zeros(F + 1, dtype=np.int32)
    ids_offsets[1:] = np.cumsum(keep.sum(1))
    t2 = cmap.tsne2 if cmap.tsne2 is not None else np.full((F, 2), np.nan)
    t3 = cmap.tsne3 if cmap.tsne3 is not None else np.full((F, 3), np.nan)
    unlabelled = pa.array(~keep[:, 0])
    return pa.table({
        "run_id": pa.array(np.full(F, run_id, dtype=object), pa.string()),
        "feature": pa.array(np.arange(F, dtype=np.int32)),
        "dead": pa.array(stats.dead),
        "class": pa.array(cls, pa.string()),
        "leaning_domain": pa.array(lean, pa.string()),
        "n_fires": pa.array(n_fires.astype(np.int64)),
        "freq": pa.array(n_fires / tot),
        "mean_act": _nullable(mean_act),
        "max_act": pa.array(stats.max_act.max(0).astype(np.float64)),
        "hist_max": _nullable(np.where(stats.dead, np.nan, stats.hist_max)),
        "label": pa.array(labels.text, pa.string()),
        "label_kind": pa.array(labels.kind, pa.string()),
        "label_tokens": pa.array(list(labels.tokens), pa.list_(pa.string())),
        "label_token_ids": pa.ListArray.from_arrays(pa.array(ids_offsets), pa.array(label_ids, pa.int32()), mask=unlabelled),
        "label_score": _nullable(labels.score),
        "label_precision": _nullable(labels.precision),
        "label_recall": _nullable(labels.recall),
        "label_train_score": _nullable(labels.train_score),
        "label_chance": _nullable(np.where(np.isnan(labels.score), np.nan, CHANCE)),
        "label_score_low": _nullable(labels.score_low),
        "label_score_high": _nullable(labels.score_high),
        "label_reliable": pa.array(labels.reliable, mask=~keep[:, 0]),
        "map_x": _nullable(cmap.coords[:, 0]),
        "map_y": _nullable(cmap.coords[:, 1]),
        "map_z": _nullable(cmap.coords[:, 2]),
        "tsne_x": _nullable(t2[:, 0]),
        "tsne_y": _nullable(t2[:, 1]),
        "tsne3_x": _nullable(t3[:, 0]),
        "tsne3_y": _nullable(t3[:, 1]),
        "tsne3_z": _nullable(t3[:, 2]),
        "cluster": pa.array(cmap.cluster.astype(np.int32), mask=cmap.cluster < 0),
    })


def domain_stats_table(run_id: str, stats: FeatureStats, labels: Labels) -> pa.Table:
    D, F = stats.n_fires.shape
    n = D * F
    feat = np.repeat(np.arange(F, dtype=np.int32), D)  # sorted by feature, then domain
    dom = np.tile(np.arange(D), F)

    def fd(a: np.ndarray | None) -> np.ndarray:
        return np.full(n, np.nan) if a is None else np.asarray(a, dtype=np.float64).T.reshape(-1)

    bins = stats.hist.shape[2]
    hist = stats.hist.transpose(1, 0, 2).reshape(-1)
    return pa.table({
        "run_id": pa.array(np.full(n, run_id, dtype=object), pa.string()),
        "feature": pa.array(feat),
        "domain": pa.array(np.array(stats.domains, dtype=object)[dom], pa.string()),
        "n_tokens": pa.array(stats.n_tokens[dom].astype(np.int64)),
        "n_fires": pa.array(stats.n_fires.T.reshape(-1).astype(np.int64)),
        "freq": pa.array(fd(stats.freq)),
        "mean_act": _nullable(fd(stats.mean_act)),
        "max_act": pa.array(fd(stats.max_act)),
        "freq_sel": _nullable(fd(stats.freq_sel)),
        "mag_sel": _nullable(fd(stats.mag_sel)),
        "selectivity": _nullable(fd(stats.selectivity)),
        "hist_counts": pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * bins),
                                                pa.array(hist.astype(np.int32))),
        "detection_score": _nullable(fd(labels.domain_score)),
        "val_fires": pa.array(labels.val_fires.T.reshape(-1).astype(np.int64)),
    })


def _ranked_rows(run_id: str, kinds: list[tuple[str, np.ndarray, np.ndarray]], kind_col: str, id_col: str,
                 score_col: str) -> dict[str, np.ndarray]:
    """Long rows (feature, kind, rank, id, score) from per-kind [F, n] arrays, sorted by feature."""
    feats, knd, rank, ids, scores = [], [], [], [], []
    for name, i, s in kinds:
        F, n = i.shape
        keep = i >= 0
        feats.append(np.repeat(np.arange(F), n)[keep.ravel()])
        knd.append(np.full(int(keep.sum()), name, dtype=object))
        rank.append(np.tile(np.arange(n), F)[keep.ravel()])
        ids.append(i[keep])
        scores.append(s[keep])
    f = np.concatenate(feats)
    k = np.concatenate(knd)
    order = np.argsort(f, kind="stable")
    return {"run_id": np.full(len(f), run_id, dtype=object), "feature": f[order].astype(np.int32), kind_col: k[order],
            "rank": np.concatenate(rank)[order].astype(np.int32), id_col: np.concatenate(ids)[order].astype(np.int32),
            score_col: np.concatenate(scores)[order].astype(np.float64)}


def neighbours_table(run_id: str, nb: Neighbours) -> pa.Table:
    rows = _ranked_rows(run_id, [("decoder", nb.decoder_ids, nb.decoder_scores),
                                 ("activation", nb.activation_ids, nb.activation_scores)],
                        "kind", "neighbour", "score")
    return pa.table({k: pa.array(v, pa.string() if v.dtype == object else None) for k, v in rows.items()})


def token_effects_table(run_id: str, te: TokenEffects, vocab: Vocab) -> pa.Table:
    rows = _ranked_rows(run_id, [("up", te.up_ids, te.up_vals), ("down", te.down_ids, te.down_vals)], "direction",
                        "token_id", "effect")
    table = {k: pa.array(v, pa.string() if v.dtype == object else None) for k, v in rows.items()}
    table["token"] = vocab.take(rows["token_id"])
    return pa.table({c: table[c] for c in ("run_id", "feature", "direction", "rank", "token_id", "token", "effect")})


def clusters_table(run_id: str, cmap: ConceptMap, ctoks: list[list[int]], vocab: Vocab, stats: FeatureStats,
                   labels: Labels) -> pa.Table:
    k = len(ctoks)
    cls, _ = stats.classes()
    rows = []
    for c in range(k):  # k (10) rows
        members = cmap.cluster == c
        names, counts = np.unique(cls[members].astype(str), return_counts=True)
        toks = [vocab.text(t) for t in ctoks[c]]
        scores = labels.score[members]
        scores = scores[~np.isnan(scores)]
        centre = np.nanmean(cmap.coords[members], axis=0)
        rows.append({
            "run_id": run_id, "cluster": c, "size": int(members.sum()),
            "label": ", ".join(t.strip() or repr(t) for t in toks[:3]) or f"cluster {c}",
            "top_tokens": toks, "central_features": cmap.central[c],
            "centre_x": float(centre[0]), "centre_y": float(centre[1]), "centre_z": float(centre[2]),
            "class_counts": json.dumps(dict(zip(names.tolist(), counts.tolist()))),
            "mean_label_score": float(scores.mean()) if len(scores) else None,
        })
    if not rows:
        return pa.table({"run_id": pa.array([], pa.string())})
    return pa.Table.from_pylist(rows)
