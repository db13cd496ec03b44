"""Sweep specs in the vocabulary of W&B / MLflow sweeps: method, parameters, metric + goal, run_cap.

A sweep expands into *jobs*, one per SAE: every combination of the parameters (grid) or a seeded
sample of them (random), times the training domains. Every expanded configuration is validated —
including against the model's layer count — before anything is enqueued.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.config_base import ConfigBase, apply_override
from core.config_bounds import bounded, check_value, field_check, seed_field
from core.errors import LabError
from engine.config import ARCHITECTURES, ExperimentConfig, build_config, load_config_file

# Sweep parameter -> config key (the names researchers use, as in the seeds).
PARAMETERS: dict[str, str] = {
    "layer": "layer",
    "hook": "hook",
    "k": "sae.k",
    "d_sae": "sae.d_sae",
    "architecture": "sae.architecture",  # any registered architecture (engine/training/architectures)
    "l1_coefficient": "sae.l1_coefficient",
    "l0_coefficient": "sae.l0_coefficient",
    "target_l0": "sae.target_l0",
    "bandwidth": "sae.bandwidth",
    "prefixes": "sae.prefixes",
    "lr": "train.lr",
    "domains": "data.domains",
    "train_domains": "train_domains",
    "seed": "seed",
    "tokens": "data.tokens_per_domain",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
}
# Leaderboard metrics and their natural goal.
METRICS: dict[str, str] = {
    "overall": "maximize",
    "fvu": "minimize",
    "r2": "maximize",
    "mse": "minimize",
    "cosine": "maximize",
    "transfer_ratio": "minimize",
    "l0": "minimize",
    "dead_frac": "minimize",
    "score": "maximize",
    "ce_recovered": "maximize",
    "emb_cos_sae": "maximize",
    "concept_coverage": "maximize",  # share of ground-truth concepts with a latent at held-out F1 >= 0.8
    "probe_k1": "maximize",  # mean held-out accuracy of 1-latent concept probes
}


@dataclass
class SweepSpec(ConfigBase):
    name: str = "sweep"
    method: Literal["grid", "random"] = "grid"
    parameters: dict[str, Any] = field(default_factory=dict)
    metric: dict[str, Any] = field(default_factory=lambda: {"name": "overall", "goal": "maximize"})
    run_cap: int | None = bounded(None, ge=1, le=100_000)  # most jobs; None: the whole grid (random: 10)
    seed: int = seed_field(0)
    base: dict[str, Any] = field(default_factory=dict)  # experiment settings shared by every job

    def metric_name(self) -> str:
        return str(self.metric.get("name", "overall"))

    def goal(self) -> str:
        return str(self.metric.get("goal") or METRICS.get(self.metric_name(), "minimize"))


def _values(name: str, spec: Any) -> list[Any] | dict[str, Any]:
    if isinstance(spec, dict):
        if "values" in spec:
            spec = spec["values"]
        elif "value" in spec:
            spec = [spec["value"]]
        elif {"min", "max"} <= set(spec):
            return spec
        else:
            raise LabError(f"sweep parameter '{name}' needs a list, {{'values': [...]}} or {{'min': .., 'max': ..}}")
    if not isinstance(spec, list):
        spec = [spec]
    if not spec:
        raise LabError(f"sweep parameter '{name}' has an empty list of values: give at least one value")
    return spec


def check_range(name: str, r: dict[str, Any]) -> None:
    """A random range's min and max must themselves be allowed values of the setting they sample,
    so a sweep is refused as written, not only when an unlucky draw lands out of range."""
    lo, hi = r["min"], r["max"]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi))
    if not numeric or not lo <= hi:  # NaN fails lo <= hi too
        raise LabError(f"sweep parameter '{name}' range must have numeric min <= max, got min {lo!r}, max {hi!r}")
    found = field_check(ExperimentConfig, PARAMETERS[name].split("."))
    if found is None:
        raise LabError(f"sweep parameter '{name}' is not numeric: give it a list of values, not a range")
    checked, field_name = found
    for end, v in (("min", lo), ("max", hi)):
        if checked.integer and isinstance(v, float) and not v.is_integer():
            raise LabError(f"sweep parameter '{name}' range {end} = {v!r} must be a whole number: {field_name} takes whole "
                           "numbers")
        try:
            check_value("config", PARAMETERS[name], int(v) if checked.integer else v, checked, field_name)
        except LabError as e:
            raise LabError(f"sweep parameter '{name}' range {end} is invalid: {e}") from None


def _sample_range(name: str, r: dict[str, Any], rng: random.Random) -> Any:
    lo, hi = r["min"], r["max"]
    if r.get("distribution") == "log_uniform":
        if lo <= 0:
            raise LabError(f"sweep parameter '{name}': log_uniform needs min > 0")
        v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        v = rng.uniform(lo, hi)
    return int(round(v)) if isinstance(lo, int) and isinstance(hi, int) else v


def expand(spec: SweepSpec) -> list[ExperimentConfig]:
    """All experiment configurations of the sweep (validated), in queue order."""
    spec.check_bounds("sweep")
    if spec.metric_name() not in METRICS:
        raise LabError(f"unknown sweep metric '{spec.metric_name()}': use one of {', '.join(METRICS)}")
    if spec.goal() not in ("minimize", "maximize"):
        raise LabError(f"sweep metric goal '{spec.goal()}' must be minimize or maximize")
    if not spec.parameters:
        raise LabError("the sweep has no parameters: give at least one, e.g. {\"k\": [48, 24, 16]}")
    unknown = sorted(set(spec.parameters) - set(PARAMETERS))
    if unknown:
        raise LabError(f"unknown sweep parameter '{unknown[0]}': use {', '.join(PARAMETERS)}")
    values = {name: _values(name, v) for name, v in spec.parameters.items()}
    rng = random.Random(spec.seed)
    if spec.method == "grid":
        ranges = [n for n, v in values.items() if isinstance(v, dict)]
        if ranges:
            raise LabError(f"grid sweeps need lists of values; '{ranges[0]}' is a range: use method random")
        names = list(values)
        combos = [dict(zip(names, c)) for c in itertools.product(*(values[n] for n in names))]
    else:
        for name, v in values.items():
            if isinstance(v, dict):
                check_range(name, v)
        n = spec.run_cap or 10
        combos = []
        for _ in range(n):
            combos.append({name: (_sample_range(name, v, rng) if isinstance(v, dict) else rng.choice(v))
                           for name, v in values.items()})
    configs: list[ExperimentConfig] = []
    seen = set()
    for combo in combos:
        data = _deep_copy(spec.base)
        for name, value in combo.items():
            apply_override(data, PARAMETERS[name].split("."), value)
        label = ", ".join(f"{n}={_short(v)}" for n, v in combo.items())
        data["name"] = f"{spec.name}: {label}"
        try:
            config = build_config(base=data)
        except LabError as e:
            raise LabError(f"sweep combination ({label}) is invalid: {e}") from None
        key = config.to_json()
        if key not in seen:
            seen.add(key)
            configs.append(config)
    return configs


def _short(v: Any) -> str:
    if isinstance(v, list):
        return "+".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d))


PRESETS: dict[str, dict[str, Any]] = {
    # Seed 000, Experiment 1: which layer gives the best reconstruction / transfer balance?
    "layer-sweep": {"name": "layer-sweep", "parameters": {"layer": [0, 1, 2, 3, 4, 5]},
                    "base": {"sae": {"k": 16, "d_sae": 2048}}},
    # Seed 000, Experiment 2: top-k at d_sae 2048 on layer 2.
    "topk-sweep": {"name": "topk-sweep", "parameters": {"k": [48, 24, 16]}, "base": {"layer": 2, "sae": {"d_sae": 2048}}},
    # Every built-in architecture at L0 = 8, 16, 32 on layer 2 (k is the target L0 of jumprelu and relu):
    # 15 configurations x 2 training domains; the Pareto view draws one FVU-vs-L0 front per architecture.
    "architectures": {"name": "architectures", "parameters": {"architecture": list(ARCHITECTURES), "k": [8, 16, 32]},
                      "base": {"layer": 2, "sae": {"d_sae": 2048}}},
    # Every layer x k in {48, 24, 16}: 6 x 3 x 2 training domains = 36 SAEs at the default 6 epochs; the
    # three k of a layer and domain train in one pass (share groups). `python -m engine bench sweep` times it.
    "everything": {"name": "everything", "parameters": {"layer": [0, 1, 2, 3, 4, 5], "k": [48, 24, 16]},
                   "base": {"sae": {"d_sae": 2048}}},
}


def load_spec(source: str | dict[str, Any]) -> SweepSpec:
    """A preset name, a JSON/TOML file path, or a dict."""
    if isinstance(source, dict):
        data = source
    elif source in PRESETS:
        data = PRESETS[source]
    elif Path(source).exists():
        data = load_config_file(source)
    else:
        raise LabError(f"unknown sweep '{source}': use a preset ({', '.join(PRESETS)}) or a JSON/TOML spec file")
    return SweepSpec.from_dict(data, "sweep")
