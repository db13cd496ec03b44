"""Fixtures of the analysis tests: one real small experiment, analysed once per session.

The finished lab is copied first so its analysis tables never leak into tests that read the
shared ``finished_lab``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.helpers import copy_lab


@dataclass
class Analyzed:
    lab: object
    config: object
    run_ids: list[str]
    run_id: str
    summary: dict


@pytest.fixture(scope="session")
def analyzed(finished_lab, tmp_path_factory) -> Analyzed:
    from engine.analysis.analyze import analyze_run

    src, config, outcomes = finished_lab
    lab = copy_lab(src.root, tmp_path_factory.mktemp("analyzed") / "lab")
    run_id = next(o.run_id for o in outcomes if o.resolved["train_domain"] == "prose")
    summary = analyze_run(lab, run_id, seed=0)
    return Analyzed(lab, config, [o.run_id for o in outcomes], run_id, summary)


def numpy_topk_codes(sae_folder: Path, x: np.ndarray) -> np.ndarray:
    """Dense TopK feature activations, from the saved weights, written from scratch in numpy."""
    t = {k: v.astype(np.float64) for k, v in load_file(str(sae_folder / "sae_weights.safetensors")).items()}
    k = json.loads((sae_folder / "cfg.json").read_text())["k"]
    pre = (x.astype(np.float64) - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    f = np.zeros_like(pre)
    idx = np.argpartition(-pre, k - 1, axis=1)[:, :k]
    np.put_along_axis(f, idx, np.maximum(np.take_along_axis(pre, idx, 1), 0), 1)
    return f


def run_stores(lab, run_id: str) -> dict:
    """The activation stores the run was trained on, opened by the keys saved with it."""
    from engine.artifacts import load_run_config
    from engine.collection.store import ActivationStore

    resolved = load_run_config(lab, run_id)
    return {name: ActivationStore.open(lab.activations / key) for name, key in resolved["activation_sets"].items()}


@pytest.fixture(scope="session")
def stores(analyzed) -> dict:
    return run_stores(analyzed.lab, analyzed.run_id)


@pytest.fixture(scope="session")
def dense(analyzed, stores) -> dict:
    """{domain: dense [tokens x features] activations of the analysed run}, computed in float64 numpy."""
    folder = analyzed.lab.run_dir(analyzed.run_id) / "sae"
    cfg = analyzed.config
    return {name: numpy_topk_codes(folder, np.asarray(s.acts(cfg.hook, cfg.layer))) for name, s in stores.items()}
