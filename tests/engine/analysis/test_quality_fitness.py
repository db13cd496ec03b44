"""A barely trained SAE never reads as fit for interpretability: the stored quality score carries
plain warnings after evaluation and after analysis, and the CLI prints them next to the rating."""

from __future__ import annotations

import json

import db
from tests.helpers import copy_lab, small_overrides


def test_a_one_step_sae_is_flagged_everywhere(finished_lab, tmp_path, capsys):
    from engine.cli import _print_outcomes
    from engine.config import build_config
    from engine.pipeline import run_experiment

    src, _, _ = finished_lab
    lab = copy_lab(src.root, tmp_path / "lab")
    # Same data as the finished lab (its activations are reused), one optimizer step in all.
    config = build_config(overrides=small_overrides(tokens=8000, epochs=1.0, d_sae=512, k=8)
                          + ["layer=2", "name=one-step", "train.batch_size=65536", 'train_domains=["prose"]'])
    (outcome,) = run_experiment(config, lab, progress=False)
    assert outcome.train["steps"] == 1
    q = db.query(lab, "SELECT * FROM quality_scores WHERE run_id = ?", [outcome.run_id]).iloc[0]
    details = json.loads(q["details"])
    assert details["fit_for_interpretability"] is False
    assert any("only 1 step" in w for w in details["warnings"])
    assert details["interpretable_rule"].startswith("reliable automatic label")  # the analysis rescored it
    _print_outcomes(lab, [outcome])
    out = capsys.readouterr().out
    assert "warning: not fit for interpretability, whatever the rating says: trained for only 1 step" in out
    assert f"ground-truth concepts of run {outcome.run_id}" in out and "found (F1 >= 0.8)" in out
    # Re-evaluating an analysed run keeps the analysis-time rule and the warnings.
    from engine.pipeline import evaluate_existing

    again = evaluate_existing(lab, outcome.run_id)["quality"]
    stored = json.loads(db.query(lab, "SELECT details FROM quality_scores WHERE run_id = ?", [outcome.run_id]).iloc[0, 0])
    assert again["details"]["interpretable_rule"] == stored["interpretable_rule"] == details["interpretable_rule"]
    assert stored["fit_for_interpretability"] is False
