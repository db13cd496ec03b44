"""Encode once: the analysis that reads the held-out codes evaluation left gives the same tables as
the analysis that encodes every row itself."""

from __future__ import annotations

import numpy as np
import pandas as pd

import db
from tests.helpers import copy_lab

TABLES = {
    "features": ["feature"],
    "feature_domain_stats": ["feature", "domain"],
    "feature_context_rows": ["feature", "domain", "kind", "rank"],
    "feature_neighbours": ["feature", "kind", "rank"],
    "feature_token_effects": ["feature", "direction", "rank"],
    "clusters": ["cluster"],
    "concept_results": ["concept"],
}


def _tables(lab, run_id: str) -> dict[str, pd.DataFrame]:
    return {name: db.query(lab, f'SELECT * FROM "{name}" WHERE run_id = ? ORDER BY {", ".join(key)}', [run_id])
            for name, key in TABLES.items()}


def test_analysis_reusing_evaluations_codes_matches_encoding_itself(finished_lab, tmp_path):
    import torch

    from engine.analysis.analyze import analyze_run
    from engine.artifacts import load_run, stores_for_run
    from engine.evaluation.codes import CODES
    from engine.runs import evaluate_sae

    src, config, outcomes = finished_lab
    lab = copy_lab(src.root, tmp_path / "lab")
    run_id = outcomes[0].run_id
    own = analyze_run(lab, run_id)
    assert own["reused_code_rows"] == 0
    first = _tables(lab, run_id)

    # What the worker does: evaluate (the real evaluate_sae, told the run id), then analyse in the same process.
    run = load_run(lab, run_id, "cpu")
    stores, _ = stores_for_run(lab, run.resolved, run.config)
    evaluate_sae(run.sae, run.config, run.resolved["train_domain"], stores, torch.device("cpu"), splice=False,
                 codes_run_id=run_id)
    assert CODES.held_for(run_id) == len(stores)  # other tests in this process may have left their own
    reused = analyze_run(lab, run_id)
    assert reused["reused_code_rows"] == sum(s.n_rows - s.val_start for s in stores.values()) > 0
    assert CODES.held_for(run_id) == 0  # dropped once read
    second = _tables(lab, run_id)
    for name in TABLES:
        a, b = first[name], second[name]
        assert len(a) > 0 or name == "concept_results", name
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
    # And the run-level summary agrees too.
    for key in ("n_live", "n_dead", "classes", "n_contexts", "labelled", "median_label_score", "concepts"):
        assert own[key] == reused[key], key
    assert np.isfinite(reused["seconds"])
