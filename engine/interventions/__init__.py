"""Interventions: suppress, scale or clamp SAE features inside the model and measure what changes.

Public API (the app, the CLI and the findings use these):

* ``run_intervention(lab, spec) -> InterventionResult`` and ``intervene(lab, run_id, feature, op, value, text)``
  (``engine.interventions.run``); ``prepare_run(lab, run_id)`` loads and warms a run ahead of them;
* ``ablation_specificity(lab, run_id, n_features, n_contexts, seed)`` (``engine.interventions.specificity``);
* reads: ``engine.interventions.queries`` (``interventions_for_feature``, ``intervention_detail``, ...).
"""

from importlib import import_module
from typing import Any

# Where each public name lives. Loaded on first use (PEP 562): the engine's CLI parser imports this
# package's ``cli`` for every command, and ``run`` / ``specificity`` load torch (seconds).
_HOME = {
    "Generation": "results", "InterventionResult": "results", "SpecificityResult": "results",
    "intervene": "run", "prepare_run": "run", "run_intervention": "run",
    "Edit": "spec", "InterventionOptions": "spec", "InterventionSpec": "spec",
    "ablation_specificity": "specificity",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'engine.interventions' has no attribute '{name}'")
    return getattr(import_module(f"engine.interventions.{_HOME[name]}"), name)


__all__ = [
    "Edit",
    "Generation",
    "InterventionOptions",
    "InterventionResult",
    "InterventionSpec",
    "SpecificityResult",
    "ablation_specificity",
    "intervene",
    "prepare_run",
    "run_intervention",
]
