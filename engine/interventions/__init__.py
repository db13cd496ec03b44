"""Interventions: suppress, scale or clamp SAE features inside the model and measure what changes.

Public API (the app, the CLI and the findings use these):

* ``run_intervention(lab, spec) -> InterventionResult`` and ``intervene(lab, run_id, feature, op, value, text)``
  (``engine.interventions.run``); ``prepare_run(lab, run_id)`` loads and warms a run ahead of them;
* ``ablation_specificity(lab, run_id, n_features, n_contexts, seed)`` (``engine.interventions.specificity``);
* reads: ``engine.interventions.queries`` (``interventions_for_feature``, ``intervention_detail``, ...).
"""

from engine.interventions.results import Generation, InterventionResult, SpecificityResult
from engine.interventions.run import intervene, prepare_run, run_intervention
from engine.interventions.spec import Edit, InterventionOptions, InterventionSpec
from engine.interventions.specificity import ablation_specificity

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
