"""Writing interventions and specificity studies to DuckDB (through ``db``: one transaction each)."""

from __future__ import annotations

import datetime as dt
import json

from core.lab import Lab, code_version
from db import Op, transaction
from db.writer import apply_ops
from engine.interventions.results import InterventionResult, SpecificityResult


def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def result_ops(r: InterventionResult) -> list[Op]:
    spec = r.spec
    edits = spec.get("edits", [])
    nb = r.neighbours or {}
    row = {
        "intervention_id": r.intervention_id, "run_id": r.run_id, "features": [int(e["feature"]) for e in edits],
        "edits": json.dumps(edits), "spec": json.dumps(spec), "model_kind": r.model_kind, "input_kind": r.input_kind,
        "input_text": spec.get("text"), "domain": spec.get("domain"), "sequences": list(spec.get("sequences") or []) or None,
        "tokens": r.tokens or None, "edited_mask": r.edited_mask or None, "n_tokens": r.n_tokens,
        "n_edited_positions": r.n_edited_positions, "feature_acts": json.dumps(r.feature_acts), "kl_mean": r.kl_mean,
        "kl_max": r.kl_max, "kl_per_position": r.kl_per_position, "cosine_shift": r.cosine_shift,
        "shift_per_position": r.shift_per_position, "per_sequence": r.per_sequence,
        "delta_ce": json.dumps(r.delta_ce) if r.delta_ce is not None else None, "token_source": r.token_source,
        "neighbour_overlap": nb.get("overlap"), "neighbour_spearman": nb.get("spearman"),
        "neighbour_corpus": nb.get("n_corpus"), "notes": list(r.notes), "seconds": float(r.seconds),
        "code_version": code_version(), "created_at": _ts(r.created_at),
    }
    ops = [Op("insert", "interventions", list(row), [list(row.values())], "error")]
    movers = [[r.intervention_id, d, m["rank"], m["token_id"], m["token"], m["delta"]]
              for d in ("up", "down") for m in r.token_movers.get(d, [])]
    ops.append(Op("insert", "intervention_token_movers",
                  ["intervention_id", "direction", "rank", "token_id", "token", "delta"], movers))
    g = r.generation
    if g is not None:
        ops.append(Op("insert", "intervention_generations",
                      ["intervention_id", "prompt", "n_new_tokens", "sampled", "seed", "temperature", "clean_text", "edited_text",
                       "clean_tokens", "edited_tokens", "first_divergence"],
                      [[r.intervention_id, g.prompt, g.n_new_tokens, g.sampled, g.seed, g.temperature,
                        g.clean_text, g.edited_text,
                        g.clean_tokens, g.edited_tokens, g.first_divergence]]))
    rows = [[r.intervention_id, x["kind"], x["rank"], x["domain"], x["seq"], x["text"], x["rank_clean"], x["rank_edited"],
             x["sim_clean"], x["sim_edited"]] for x in nb.get("rows", [])]
    ops.append(Op("insert", "intervention_neighbours",
                  ["intervention_id", "kind", "rank", "domain", "seq", "text", "rank_clean", "rank_edited", "sim_clean",
                   "sim_edited"], rows))
    return ops


def save_result(lab: Lab, result: InterventionResult) -> None:
    with transaction(lab) as con:
        apply_ops(con, result_ops(result))


def save_specificity(lab: Lab, s: SpecificityResult) -> None:
    study = {
        "study_id": s.study_id, "run_id": s.run_id, "model_kind": s.model_kind, "metric": s.metric, "n_features": len(s.features),
        "n_contexts": s.n_contexts, "n_candidates": s.n_candidates, "seed": s.seed, "n_eligible": s.n_eligible,
        "frac_own_gt_random": s.frac_own_gt_random, "frac_own_gt_control": s.frac_own_gt_control,
        "p_own_gt_random": s.p_own_gt_random, "p_own_gt_control": s.p_own_gt_control, "median_own": s.median_own,
        "median_random": s.median_random, "median_control": s.median_control, "random_fire_share": s.random_fire_share,
        "control_fire_share": s.control_fire_share, "claim": s.claim, "seconds": s.seconds, "code_version": code_version(),
        "created_at": _ts(s.created_at),
    }
    cols = ["study_id", "feature", "freq", "control_feature", "control_freq", "own_effect", "random_effect", "control_effect",
            "own_sequences", "random_fired", "control_fired"]
    rows = [[s.study_id] + [f[c] for c in cols[1:]] for f in s.features]
    with transaction(lab) as con:
        apply_ops(con, [Op("insert", "specificity_studies", list(study), [list(study.values())], "error"),
                        Op("insert", "specificity_features", cols, rows, "error")])
