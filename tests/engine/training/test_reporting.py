"""What a finished run reports about training: dead latents on the training split next to the
held-out figure (each named), and the matmul dtype the trainer used."""

from __future__ import annotations

import json

import db


def test_dead_on_the_training_split_and_the_matmul_dtype_are_recorded(finished_lab):
    lab, config, outcomes = finished_lab
    for o in outcomes:
        m = db.query(lab, "SELECT * FROM run_metrics WHERE run_id = ?", [o.run_id]).iloc[0]
        last = db.query_rows(lab, "SELECT value FROM step_metrics WHERE run_id = ? AND name = 'dead_frac' "
                                       "ORDER BY step DESC LIMIT 1", [o.run_id])[0][0]
        assert m["dead_frac_train"] == last and 0 <= last <= 1
        assert 0 <= m["dead_frac"] <= 1  # the held-out figure stays beside it
        assert o.train["final_metrics"]["dead_frac_train"] == last
        stored = json.loads(db.query_rows(lab, "SELECT config FROM runs WHERE run_id = ?", [o.run_id])[0][0])
        assert stored["training"]["matmul_dtype"] in ("float32", "bfloat16")
    notes = db.query(lab, "SELECT note, emb_cos_recovered FROM splice_results")
    assert len(notes) and ((notes["note"].isna()) == notes["emb_cos_recovered"].notna()).all()  # a NULL ratio says why
