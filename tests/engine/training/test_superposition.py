"""Ground truth: a TopK SAE recovers known feature directions from superposed, sparse data."""

from __future__ import annotations

import numpy as np
import torch

from engine.config import SAEConfig, TrainConfig
from engine.training.data import ShuffledBatches
from engine.training.trainer import Trainer, init_sae_from_store_stats


def test_topk_sae_recovers_planted_features():
    # Tiny matrices: on a loaded 2-core machine two OpenMP threads wait on each other far longer than
    # the work takes (66 s instead of 6 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _recovers()
    finally:
        torch.set_num_threads(threads)


def _recovers():
    # 64 unit feature directions packed into a 32-dimensional space (superposition); every sample is
    # a sparse non-negative combination of about 4 of them with magnitudes in [0.5, 1.5].
    rng = np.random.default_rng(0)
    d, n_true, n = 32, 64, 30_000
    F = rng.standard_normal((n_true, d))
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    active = rng.random((n, n_true)) < 4 / n_true
    X = ((rng.uniform(0.5, 1.5, (n, n_true)) * active) @ F).astype(np.float32)
    sae_cfg = SAEConfig(d_sae=128, k=4)
    cfg = TrainConfig(batch_size=512, epochs=10, lr=3e-3, dead_after_tokens=20_000)
    sae = init_sae_from_store_stats(d, sae_cfg, X.mean(0), float((X**2).sum(1).mean()), seed=0)
    Trainer(sae, sae_cfg, cfg, ShuffledBatches(X, 0, n, 512, 0), torch.device("cpu")).run()
    W = sae.W_dec.detach().numpy()
    W = W / np.linalg.norm(W, axis=1, keepdims=True)
    best = (F @ W.T).max(axis=1)  # for each true feature, the best-matching decoder direction
    assert best.mean() >= 0.95, f"mean best cosine {best.mean():.4f}"
    # Control: random directions are not "recovered" by the same dictionary.
    R = rng.standard_normal((n_true, d))
    R /= np.linalg.norm(R, axis=1, keepdims=True)
    assert (R @ W.T).max(axis=1).mean() < 0.8
