"""What an intervention and an ablation-specificity study return: plain dataclasses, their summary
lines, and the evidence a findings card keeps.

Produced by ``engine.interventions.run`` and ``engine.interventions.specificity``, written by
``engine.interventions.store`` and rebuilt from stored rows by ``engine.interventions.queries``;
none of them needs the model, so this module loads no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine.interventions.spec import InterventionSpec


@dataclass
class Generation:
    """Greedy (or seeded sampled) continuations of the text, clean and edited, side by side."""

    prompt: str
    n_new_tokens: int
    sampled: bool
    seed: int
    temperature: float
    clean_text: str
    edited_text: str
    clean_tokens: list[str]
    edited_tokens: list[str]
    first_divergence: int | None  # index of the first generated token that differs; None when identical


@dataclass
class InterventionResult:
    intervention_id: str
    run_id: str
    spec: dict[str, Any]
    model_kind: str  # causal | encoder
    input_kind: str  # text | corpus
    n_tokens: int
    n_edited_positions: int
    feature_acts: dict[str, dict[str, Any]]  # per edited feature: where it fired on the input (clean)
    tokens: list[str] = field(default_factory=list)  # text input: the tokens the model saw
    edited_mask: list[bool] = field(default_factory=list)  # text input: which of them were edited
    kl_mean: float | None = None
    kl_max: float | None = None
    kl_per_position: list[float] | None = None
    cosine_shift: float | None = None
    shift_per_position: list[float] | None = None  # encoders, text: 1 - cos of each token's final hidden state
    per_sequence: list[float] | None = None  # corpus input: the headline effect per sequence
    delta_ce: dict[str, dict[str, float]] | None = None
    token_source: str = ""  # logits (causal LMs) | embedding (encoders, through the tied word embeddings)
    token_movers: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"up": [], "down": []})
    generation: Generation | None = None
    neighbours: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    created_at: str = ""
    stored: bool = False

    @property
    def edits(self) -> list[dict[str, Any]]:
        return list(self.spec.get("edits", []))

    @property
    def effect(self) -> float | None:
        """The headline effect: mean KL (causal LMs) or the cosine shift (encoders)."""
        return self.kl_mean if self.model_kind == "causal" else self.cosine_shift

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        return summary_line(self.spec, self.model_kind, self.input_kind, self.n_edited_positions, self.kl_mean, self.kl_max,
                            self.cosine_shift)

    def evidence(self) -> dict[str, Any]:
        """A compact, JSON-ready record of this intervention for a findings card."""
        nb = self.neighbours or {}
        g = self.generation
        return evidence_record(
            intervention_id=self.intervention_id, run_id=self.run_id, spec=self.spec, model_kind=self.model_kind,
            input_kind=self.input_kind, n_edited_positions=self.n_edited_positions, kl_mean=self.kl_mean, kl_max=self.kl_max,
            cosine_shift=self.cosine_shift, delta_ce=self.delta_ce, neighbour_overlap=nb.get("overlap"),
            neighbour_spearman=nb.get("spearman"), feature_acts=self.feature_acts, token_source=self.token_source,
            token_movers=self.token_movers, created_at=self.created_at,
            generation=None if g is None else {"clean": g.clean_text, "edited": g.edited_text,
                                               "sampled": g.sampled, "seed": g.seed})


def summary_line(spec: dict[str, Any], model_kind: str, input_kind: str, n_edited: int, kl_mean: float | None,
                 kl_max: float | None, cos_shift: float | None) -> str:
    """One line naming the edit, the input and the headline effect with its formula."""
    s = InterventionSpec.from_dict(spec)
    if model_kind == "causal":
        head = f"KL {kl_mean:.3g} nats (mean over {n_edited} edited positions of KL(p_clean || p_edited), max {kl_max:.3g})"
    else:
        head = f"cosine shift {cos_shift:.3g} (1 - cos of the mean-pooled embedding)"
    where = "the text" if input_kind == "text" else f"{len(s.sequences)} {s.domain} sequences"
    return f"{s.describe()} on {where}: {head}"


def evidence_record(*, intervention_id: str, run_id: str, spec: dict[str, Any], model_kind: str, input_kind: str,
                    n_edited_positions: int, kl_mean: float | None, kl_max: float | None, cosine_shift: float | None,
                    delta_ce: dict[str, dict[str, float]] | None, neighbour_overlap: float | None,
                    neighbour_spearman: float | None, feature_acts: dict[str, Any], token_source: str,
                    token_movers: dict[str, list[dict[str, Any]]], created_at: str,
                    generation: dict[str, Any] | None) -> dict[str, Any]:
    """The plain dict a findings card keeps as evidence (from a fresh result or a stored row):
    ``findings.attach_evidence(lab, card_id, "intervention", result.evidence())``."""
    ev: dict[str, Any] = {
        "kind": "intervention", "intervention_id": intervention_id, "run_id": run_id,
        "feature": int(spec["edits"][0]["feature"]) if len(spec.get("edits", [])) == 1 else None,  # the card links one feature
        "edits": list(spec.get("edits", [])),
        "input": spec.get("text") if input_kind == "text" else {"domain": spec.get("domain"),
                                                                "sequences": list(spec.get("sequences") or [])},
        "summary": summary_line(spec, model_kind, input_kind, n_edited_positions, kl_mean, kl_max, cosine_shift),
        "model_kind": model_kind,
        "metrics": {"kl_mean": kl_mean, "kl_max": kl_max, "cosine_shift": cosine_shift,
                    "delta_ce": None if delta_ce is None else {d: v["delta_ce"] for d, v in delta_ce.items()},
                    "neighbour_overlap": neighbour_overlap, "neighbour_spearman": neighbour_spearman},
        "feature_acts": feature_acts, "token_source": token_source,
        "tokens_up": [m["token"] for m in token_movers.get("up", [])],
        "tokens_down": [m["token"] for m in token_movers.get("down", [])],
        "created_at": created_at,
    }
    if generation is not None:
        ev["generation"] = generation
    return ev


CLAIM = ("zero-ablating feature j changes the model's output (mean next-token KL for causal LMs, 1 - cos of the pooled "
         "embedding for encoders) more on the sequences of j's top activations than on random sequences, and more than "
         "zero-ablating a live feature of similar firing frequency on those same sequences")


@dataclass
class SpecificityResult:
    study_id: str
    run_id: str
    model_kind: str
    metric: str  # kl | cosine_shift
    n_contexts: int
    n_candidates: int
    seed: int
    n_eligible: int
    features: list[dict[str, Any]]
    frac_own_gt_random: float
    frac_own_gt_control: float
    p_own_gt_random: float | None
    p_own_gt_control: float | None
    median_own: float
    median_random: float
    median_control: float
    random_fire_share: float
    control_fire_share: float
    claim: str = CLAIM
    seconds: float = 0.0
    created_at: str = ""
    stored: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_lines(self) -> list[str]:
        n = len(self.features)
        unit = "nats (mean next-token KL)" if self.metric == "kl" else "(1 - cos of the pooled embedding)"
        return [
            f"ablation specificity of run {self.run_id} ({self.model_kind}): {n} features of {self.n_eligible} eligible, "
            f"{self.n_contexts} contexts each, seed {self.seed}",
            f"  median effect {unit}: own top contexts {self.median_own:.4g}, random contexts {self.median_random:.4g}, "
            f"matched control on own contexts {self.median_control:.4g}",
            f"  own > random for {self.frac_own_gt_random:.0%} of features (Wilcoxon one-sided p = {_p(self.p_own_gt_random)}); "
            f"own > control for {self.frac_own_gt_control:.0%} (p = {_p(self.p_own_gt_control)})",
            f"  the ablated feature fired in {self.random_fire_share:.0%} of random sequences; the control fired in "
            f"{self.control_fire_share:.0%} of j's sequences",
            *self._where_fired(),
        ]

    def _where_fired(self) -> list[str]:
        """The comparisons again, only over features whose other condition was not null by
        construction (the ablated feature fired somewhere in the random sequences; the control
        fired somewhere in j's sequences)."""
        out = []
        for key, fired, name in (("random_effect", "random_fired", "random"), ("control_effect", "control_fired", "control")):
            sub = [f for f in self.features if f[fired] > 0]
            if sub:
                wins = sum(f["own_effect"] > f[key] for f in sub)
                own, other = np.array([f["own_effect"] for f in sub]), np.array([f[key] for f in sub])
                p = wilcoxon_greater(own, other) if len(sub) >= 5 else None
                out.append(f"  where the {name} condition was not null by construction ({len(sub)} features): own > {name} for "
                           f"{wins}/{len(sub)} (p = {_p(p)})")
        return out

    def evidence(self) -> dict[str, Any]:
        keys = ("study_id", "run_id", "model_kind", "metric", "n_contexts", "seed", "n_eligible", "frac_own_gt_random",
                "frac_own_gt_control", "p_own_gt_random", "p_own_gt_control", "median_own", "median_random", "median_control",
                "random_fire_share", "control_fire_share", "claim", "created_at")
        return {"kind": "ablation_specificity", "n_features": len(self.features), **{k: getattr(self, k) for k in keys}}


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def wilcoxon_greater(a: np.ndarray, b: np.ndarray) -> float | None:
    """One-sided Wilcoxon signed-rank p-value for H1: a − b > 0 (None when every pair ties)."""
    # deferred: scipy is heavy
    from scipy.stats import wilcoxon

    d = np.asarray(a, float) - np.asarray(b, float)
    if not np.any(d != 0):
        return None
    p = float(wilcoxon(d, alternative="greater", zero_method="wilcox").pvalue)
    return p if math.isfinite(p) else None
