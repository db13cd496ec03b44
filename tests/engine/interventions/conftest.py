"""Fixtures of the intervention tests: real models, real SAEs trained by the engine, real labs.

* ``encoder_run``: a copy of the shared ``finished_lab`` (all-MiniLM-L6-v2, the bundled encoder,
  analysed), so the interventions written here never show up in tests that read the shared lab;
* ``causal_run``: a tiny GPT-NeoX (Pythia's architecture, saved locally) with an SAE trained and
  analysed on its layer-1 MLP output by ``engine.pipeline.run_experiment``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.helpers import copy_lab, small_overrides


@dataclass
class RunFixture:
    lab: object
    run_id: str
    config: object


@pytest.fixture(scope="session")
def encoder_run(finished_lab, tmp_path_factory) -> RunFixture:
    src, config, outcomes = finished_lab
    lab = copy_lab(src.root, tmp_path_factory.mktemp("iv_encoder") / "lab")
    run_id = next(o.run_id for o in outcomes if o.resolved["train_domain"] == "prose")
    return RunFixture(lab, run_id, config)


@pytest.fixture(scope="session")
def causal_run(tiny_neox, tmp_path_factory) -> RunFixture:
    from core.lab import Lab
    from engine.config import build_config
    from engine.pipeline import run_experiment

    lab = Lab.at(tmp_path_factory.mktemp("iv_causal") / "lab")
    config = build_config(overrides=small_overrides(tokens=3000, layers="1", epochs=2.0, d_sae=256, k=8)
                          + [f'model="{tiny_neox}"', "layer=1", 'train_domains=["prose"]'])
    outcomes = run_experiment(config, lab, progress=False)
    return RunFixture(lab, outcomes[0].run_id, config)
