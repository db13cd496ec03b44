"""Token effects with bf16 candidate selection pick fp32's tokens (the bundled model's embeddings)."""

from __future__ import annotations

import numpy as np


def test_bf16_token_effects_match_fp32(analyzed):
    from engine.analysis.analyze import _prepare_model
    from engine.analysis.codes import load_run_data
    from engine.analysis.token_effects import compute_token_effects

    data = load_run_data(analyzed.lab, analyzed.run_id)
    _info, vocab, matrix, source = _prepare_model(data.config.model)
    W = data.sae.W_dec.detach()[:256]  # a slice keeps it quick; forced bf16 runs on any CPU
    a = compute_token_effects(W, matrix, source, vocab, 10, bf16=False)
    b = compute_token_effects(W, matrix, source, vocab, 10, bf16=True)
    for ids, vals in (("up_ids", "up_vals"), ("down_ids", "down_vals")):
        ia, ib = getattr(a, ids), getattr(b, ids)
        va, vb = getattr(a, vals), getattr(b, vals)
        same_set = np.array([set(x) == set(y) for x, y in zip(ia.tolist(), ib.tolist())])
        assert same_set.mean() >= 0.99, ids  # a swap needs a near-tie at fp32 rounding (1 row of 2048 on the default run)
        np.testing.assert_allclose(np.sort(vb[same_set], 1), np.sort(va[same_set], 1), rtol=1e-5, atol=1e-6)
        assert (ia == ib).mean() > 0.98
