"""The analysis of a causal LM's SAE (the Pythia path, offline: a tiny GPT-NeoX built from a config):
token effects read through the unembedding, and the probe runs the causal model."""

from __future__ import annotations

import numpy as np

import db
from tests.helpers import small_overrides


def test_causal_model_run_is_analysed_through_the_unembedding(lab, tiny_neox):
    import torch
    from transformers import AutoModelForCausalLM

    from engine.analysis.analyze import analyze_run
    from engine.analysis.probe import Prober
    from engine.config import build_config
    from engine.pipeline import run_experiment

    config = build_config(overrides=small_overrides(tokens=2000, layers="1", epochs=1.0, d_sae=64, k=4)
                          + [f'model="{tiny_neox}"', "layer=1", 'train_domains=["code"]'])
    (outcome,) = run_experiment(config, lab, progress=False, evaluate=False)
    summary = analyze_run(lab, outcome.run_id)
    assert summary["token_effect_source"] == "unembedding"
    f = int(db.query(lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead LIMIT 1", [outcome.run_id]).iloc[0, 0])
    up = db.query(lab, "SELECT token_id, effect FROM feature_token_effects WHERE run_id = ? AND feature = ? AND direction = 'up' "
                            "ORDER BY rank", [outcome.run_id, f])
    # the independent reading: decoder direction @ centred unembedding (GPT-NeoX's embed_out)
    W_U = AutoModelForCausalLM.from_pretrained(tiny_neox).get_output_embeddings().weight.detach()
    from engine.artifacts import load_run_sae

    d = torch.nn.functional.normalize(load_run_sae(lab, outcome.run_id).W_dec.detach()[f], dim=0)
    keep = torch.ones(W_U.shape[0], dtype=torch.bool)
    keep[[100, 101, 102, 103, 0]] = False  # [UNK] [CLS] [SEP] [MASK] [PAD] of the bundled tokenizer
    keep[1:999] = False  # [unused*]
    M = W_U - W_U[keep].mean(0)
    effects = (M @ d).numpy()
    effects[~keep.numpy()] = -np.inf
    assert up["token_id"].tolist() == np.argsort(-effects)[:10].tolist()
    np.testing.assert_allclose(up["effect"], np.sort(effects)[::-1][:10], rtol=1e-4, atol=1e-6)
    res = Prober(lab, outcome.run_id).probe("def main(): return 1", top_n=3)
    assert any(t.features for t in res.tokens)
