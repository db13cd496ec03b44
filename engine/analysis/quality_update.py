"""The quality score's interpretability, redone once a run's features are analysed.

At evaluation time the seed-004 score can only count features whose top activations sit on one
token, which any SAE -- a random one included -- has plenty of. After the analysis the lab knows
more, so a feature counts as interpretable only when

* its automatic label is *reliable* (``label_trust``: the 95 % interval of its held-out detection
  score clears chance by 0.1), or
* it is the best latent of a ground-truth concept at held-out F1 >= 0.8 (``concepts``);

"distinct" means distinct meanings: the concept's name for a concept match, the label's text
otherwise. The reconstruction and sparsity points are kept as they were; the score, rating and
the fitness warnings (held-out FVU, dead latents, training steps) are rewritten with an
idempotent update through the lab's writer -- after every analysis, and after a re-evaluation of
an analysed run (which would otherwise put the evaluation-time rule back).
"""

from __future__ import annotations

import json
from typing import Any

from core.lab import Lab
from db import Op, query, write_now
from engine.analysis.concepts.evaluate import COVERAGE_F1
from engine.evaluation.quality import fitness_warnings, interpretability_points, rating_of, with_warnings

RULE = "reliable automatic label (95% interval clears chance by 0.1) or ground-truth concept at held-out F1 >= 0.8"


def interpretable_meanings(lab: Lab, run_id: str) -> dict[int, str]:
    """feature -> what it means (a concept name, or its reliable label), for every interpretable feature
    of the run's stored analysis."""
    out: dict[int, str] = {}
    reliable = query(lab, "SELECT feature, label FROM features WHERE run_id = ? AND label_reliable", [run_id])
    for f, label in reliable.itertuples(index=False):
        out[int(f)] = f"label:{label}"
    concepts = query(lab, "SELECT best_latent, concept FROM concept_results WHERE run_id = ? AND status = 'evaluated' "
                               "AND f1 >= ? ORDER BY f1, concept", [run_id, COVERAGE_F1])
    for f, concept in concepts.itertuples(index=False):
        out[int(f)] = f"concept:{concept}"  # a concept match names the feature better than a label
    return out


def rescore_quality(lab: Lab, run_id: str, resolved: dict[str, Any]) -> dict[str, Any] | None:
    """Rewrite the run's quality score with the analysis-time interpretability rule, from the stored
    analysis; returns it (None when the run was never evaluated or never analysed)."""
    rows = query(lab, "SELECT * FROM quality_scores WHERE run_id = ?", [run_id])
    analysed = query(lab, "SELECT count(*) AS n FROM analysis_runs WHERE run_id = ?", [run_id])
    if rows.empty or not int(analysed.iloc[0, 0]):
        return None
    row = rows.iloc[0]
    details = json.loads(row["details"]) if isinstance(row["details"], str) else dict(row["details"] or {})
    distinct = sorted(set(interpretable_meanings(lab, run_id).values()))
    interp = interpretability_points(len(distinct))
    score = float(row["reconstruction_points"]) + float(row["sparsity_points"]) + interp
    fvu = query(lab, "SELECT fvu FROM run_metrics WHERE run_id = ?", [run_id])
    steps = (resolved.get("training") or {}).get("total_steps")
    warnings = fitness_warnings(float(fvu.iloc[0, 0]) if len(fvu) and fvu.iloc[0, 0] == fvu.iloc[0, 0] else None,
                                (details.get("dead_frac") or {}).get("value"), steps)
    details = with_warnings({**details, "distinct_interpretable_features": len(distinct), "interpretable_rule": RULE,
                             "interpretable_by": {"reliable_labels": sum(v.startswith("label:") for v in distinct),
                                                  "concepts": sum(v.startswith("concept:") for v in distinct)}}, warnings)
    values = {"interpretability_points": interp, "score": score, "rating": rating_of(score), "details": json.dumps(details)}
    write_now(lab, [Op("update", "quality_scores", where={"run_id": run_id}, values=values)])
    return {"reconstruction_points": float(row["reconstruction_points"]), "sparsity_points": float(row["sparsity_points"]),
            **values, "details": details}
