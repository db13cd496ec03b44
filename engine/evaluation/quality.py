"""The 0–5 quality score of the SAE evaluation guide (seed 004), with its bands.

score = reconstruction (0–2) + sparsity (0–2) + interpretability (0–1)

Reconstruction: the mean of the band points of MSE, cosine and explained variance.
Sparsity: the mean of the band points of L0 against the target k and of the dead fraction.
Band points: Excellent 2, Good 1.5, Fair 1, Poor 0 (the guide names bands, not points; these
points are the lab's reading of them, stated here and in the README).
Interpretability: ≥ 8 distinct interpretable features → 1, ≥ 5 → 0.5, fewer → 0. At evaluation
time (before any feature analysis) a feature counts when at least ``token_share`` of its top
activations on held-out text sit on one token, "distinct" meaning distinct such tokens; once the
run is analysed the lab's stricter rule replaces it (``engine.analysis.quality_update``): a feature
counts only when its automatic label is *reliable* (the 95 % interval of its detection score
clears chance by 0.1) or it matches a ground-truth concept at held-out F1 ≥ 0.8.
Rating: ≥ 4.5 Excellent, ≥ 3.5 Good, ≥ 2.5 Fair, below that Poor.

The bands are the guide's and are kept; where the lab's own checks disagree with a rating --
held-out FVU > 0.5, more than half the latents dead, fewer than 100 training steps -- the score
carries plain warnings (``details["warnings"]``) and ``fit_for_interpretability`` is False, so a
one-step SAE never reads as fit for interpretability whatever its points.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.evaluation.metrics import FeatureTops, ReconstructionMetrics

BAND_POINTS = {"Excellent": 2.0, "Good": 1.5, "Fair": 1.0, "Poor": 0.0}


def band_low(value: float, excellent: float, good: float, fair: float) -> str:
    """Bands for metrics where lower is better."""
    if value < excellent:
        return "Excellent"
    if value < good:
        return "Good"
    if value < fair:
        return "Fair"
    return "Poor"


def band_high(value: float, excellent: float, good: float, fair: float) -> str:
    """Bands for metrics where higher is better."""
    if value > excellent:
        return "Excellent"
    if value > good:
        return "Good"
    if value > fair:
        return "Fair"
    return "Poor"


def rating_of(score: float) -> str:
    if score >= 4.5:
        return "Excellent"
    if score >= 3.5:
        return "Good"
    if score >= 2.5:
        return "Fair"
    return "Poor"


@dataclass
class QualityScore:
    reconstruction_points: float
    sparsity_points: float
    interpretability_points: float
    score: float
    rating: str
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def interpretable_features(tops: FeatureTops, token_ids: np.ndarray, token_share: float, min_fires: int = 3) -> dict[int, int]:
    """feature -> its dominant token id, for features whose top activations mostly sit on one token."""
    out: dict[int, int] = {}
    for f in range(tops.values.shape[0]):
        valid = tops.values[f] > 0
        if valid.sum() < min_fires:
            continue
        toks = token_ids[tops.rows[f][valid]]
        tok, count = Counter(toks.tolist()).most_common(1)[0]
        if count / valid.sum() >= token_share:
            out[f] = int(tok)
    return out


MAX_FVU = 0.5
MAX_DEAD = 0.5
MIN_STEPS = 100


def fitness_warnings(fvu: float | None, dead_frac: float | None, train_steps: int | None) -> list[str]:
    """Plain sentences for every check the SAE fails, whatever its seed-004 rating says."""
    out = []
    if fvu is not None and fvu > MAX_FVU:
        out.append(f"held-out FVU {fvu:.2f} > {MAX_FVU}: the SAE misses more than half the variance, so its features "
                   "describe little of what the model computes")
    if dead_frac is not None and dead_frac > MAX_DEAD:
        out.append(f"{dead_frac:.0%} of latents are dead (> {MAX_DEAD:.0%})")
    if train_steps is not None and train_steps < MIN_STEPS:
        out.append(f"trained for only {train_steps} step{'s' if train_steps != 1 else ''} (< {MIN_STEPS}): "
                   "features of an SAE this young are mostly its random initialisation")
    return out


def with_warnings(details: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    return {**details, "warnings": list(warnings), "fit_for_interpretability": not warnings}


def quality_score(m: ReconstructionMetrics, target_k: int, n_distinct_interpretable: int,
                  train_steps: int | None = None) -> QualityScore:
    mse_band = band_low(m.mse, 0.01, 0.05, 0.10)
    cos_band = band_high(m.cosine, 0.95, 0.90, 0.85)
    ev_band = band_high(m.r2, 0.90, 0.80, 0.70)
    rel = abs(m.l0 - target_k) / max(target_k, 1)
    l0_band = "Excellent" if rel <= 0.10 else "Good" if rel <= 0.25 else "Fair" if rel <= 0.5 else "Poor"
    dead_band = band_low(m.dead_frac, 0.30, 0.50, 0.70)
    recon = float(np.mean([BAND_POINTS[b] for b in (mse_band, cos_band, ev_band)]))
    sparsity = float(np.mean([BAND_POINTS[b] for b in (l0_band, dead_band)]))
    interp = interpretability_points(n_distinct_interpretable)
    score = recon + sparsity + interp
    details = {
        "mse": {"value": m.mse, "band": mse_band},
        "cosine": {"value": m.cosine, "band": cos_band},
        "explained_variance": {"value": m.r2, "band": ev_band},
        "l0": {"value": m.l0, "target_k": target_k, "band": l0_band},
        "dead_frac": {"value": m.dead_frac, "band": dead_band},
        "distinct_interpretable_features": n_distinct_interpretable,
        "interpretable_rule": "top activations on one token (before feature analysis)",
    }
    details = with_warnings(details, fitness_warnings(m.fvu, m.dead_frac, train_steps))
    return QualityScore(recon, sparsity, interp, score, rating_of(score), details)


def interpretability_points(n_distinct_interpretable: int) -> float:
    return 1.0 if n_distinct_interpretable >= 8 else 0.5 if n_distinct_interpretable >= 5 else 0.0
