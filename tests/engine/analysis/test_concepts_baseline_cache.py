"""The model-dims baseline of the concept evaluation is computed once for the runs that share it.

Two real runs of the small experiment (trained on prose and on code) read the same activation sets:
the second run's concept results with the baseline taken from the first must equal, field by field,
its results computed from scratch.
"""

from __future__ import annotations

import dataclasses

from engine.analysis.codes import load_run_data
from engine.analysis.concepts.evaluate import BaselineCache
from engine.analysis.concepts.run import evaluate_run


def _evaluate(lab, run_id, cache):
    return evaluate_run(lab, load_run_data(lab, run_id), baselines=cache)


def test_a_second_run_on_the_same_activations_reuses_the_baseline_exactly(analyzed):
    first, second = analyzed.run_ids[:2]
    shared = BaselineCache()
    _evaluate(analyzed.lab, first, shared)
    reused = _evaluate(analyzed.lab, second, shared)
    fresh = _evaluate(analyzed.lab, second, BaselineCache())
    assert reused.timings["concepts_baseline_reused"] == 1.0
    assert fresh.timings["concepts_baseline_reused"] == 0.0
    evaluated = [r for r in fresh.results if r.status == "evaluated"]
    assert evaluated and any(r.baseline for r in evaluated)
    assert [dataclasses.asdict(r) for r in reused.results] == [dataclasses.asdict(r) for r in fresh.results]
    assert reused.summary == fresh.summary
