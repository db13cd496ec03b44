"""Fixtures of the findings tests: a private copy of the shared finished (and analysed) lab per test.

``finished_lab`` is shared by the whole session and must not change, so every test here works on
its own copy (copying ~50 MB takes ~50 ms): cards, deleted runs and re-analyses never leak.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import db
from tests.helpers import copy_lab


@dataclass
class CardsLab:
    lab: object  # core.lab.Lab
    run_id: str  # the run trained on prose (analysed)
    other_run: str  # the run trained on code (analysed)
    feature: int  # a live feature of run_id with an automatic label and a detection score
    feature2: int  # another live, labelled feature of run_id
    d_sae: int


@pytest.fixture
def cards_lab(finished_lab, tmp_path) -> CardsLab:
    src, _config, outcomes = finished_lab
    lab = copy_lab(src.root, tmp_path / "lab")
    run_id = next(o.run_id for o in outcomes if o.resolved["train_domain"] == "prose")
    other = next(o.run_id for o in outcomes if o.run_id != run_id)
    feats = [r[0] for r in db.query_rows(lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead AND label_score IS "
                                              "NOT NULL "
                                              "ORDER BY label_score DESC, feature LIMIT 2", [run_id])]
    assert len(feats) == 2, "the shared lab must be analysed (run_experiment analyses after training)"
    d_sae = db.query_rows(lab, "SELECT d_sae FROM runs WHERE run_id = ?", [run_id])[0][0]
    return CardsLab(lab, run_id, other, feats[0], feats[1], d_sae)
