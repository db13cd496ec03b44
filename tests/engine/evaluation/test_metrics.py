"""The engine's reported metrics equal an independent numpy computation from the files on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import db
from engine.evaluation.metrics import ReconstructionMetrics
from engine.evaluation.quality import quality_score, rating_of


def numpy_topk_sae(folder, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SAELens's TopK forward, written from scratch in float64 numpy."""
    t = {k: v.astype(np.float64) for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
    k = json.loads((folder / "cfg.json").read_text())["k"]
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    f = np.zeros_like(pre)
    idx = np.argpartition(-pre, k - 1, axis=1)[:, :k]
    np.put_along_axis(f, idx, np.maximum(np.take_along_axis(pre, idx, 1), 0), 1)
    return f, f @ t["W_dec"] + t["b_dec"]


def test_reported_metrics_match_numpy(finished_lab):
    lab, config, outcomes = finished_lab
    from engine.artifacts import collect_for

    stores = collect_for(config, lab)
    for o in outcomes:
        rows = db.query(lab, "SELECT * FROM eval_results WHERE run_id = ?", [o.run_id]).set_index("eval_domain")
        assert set(rows.index) == {"prose", "code"}
        for domain, store in stores.items():
            x = np.asarray(store.acts(config.hook, config.layer)[store.val_start :], dtype=np.float64)
            f, x_hat = numpy_topk_sae(lab.root / o.sae_dir, x)
            err = ((x - x_hat) ** 2).sum()
            fvu = err / ((x - x.mean(0)) ** 2).sum()
            cos = ((x * x_hat).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(x_hat, axis=1))).mean()
            row = rows.loc[domain]
            assert row["n_tokens"] == len(x)
            assert row["fvu"] == pytest.approx(fvu, rel=1e-4)
            assert row["r2"] == pytest.approx(1 - fvu, rel=1e-4)
            assert row["mse"] == pytest.approx(err / x.size, rel=1e-4)
            assert row["cosine"] == pytest.approx(cos, rel=1e-4)
            assert row["l0"] == pytest.approx((f > 0).sum(1).mean(), rel=1e-4)
            assert row["dead_frac"] == pytest.approx(((f > 0).sum(0) == 0).mean(), abs=1e-9)
        own = rows.loc[o.resolved["train_domain"]]
        assert own["transfer_ratio"] == pytest.approx(1.0)
        other = rows.drop(o.resolved["train_domain"]).iloc[0]
        assert other["transfer_ratio"] == pytest.approx(other["mse"] / own["mse"], rel=1e-9)


def test_fvu_is_mean_centred_not_around_zero():
    """A constant offset makes FVU-around-zero look great; the lab's FVU is unaffected by it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 8)) + 50.0
    x_hat = x + rng.standard_normal((1000, 8)) * 0.5
    import torch

    from engine.evaluation.metrics import MetricAccumulator
    from engine.training.sae import SparseCode

    acc = MetricAccumulator(8, 4)
    code = SparseCode(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0), 1000)
    acc.add(torch.tensor(x), torch.tensor(x_hat), code, 0)
    m = acc.result()
    assert m.fvu == pytest.approx(0.25, rel=0.1)
    assert ((x - x_hat) ** 2).sum() / (x**2).sum() < 1e-3  # the wrong formula would say "perfect"


def test_quality_bands():
    def metrics(mse, cos, r2, l0, dead):
        return ReconstructionMetrics(100, mse, 1 - r2, r2, cos, l0, 1.0, dead, 1.0)

    best = quality_score(metrics(0.005, 0.97, 0.95, 16, 0.1), 16, 10)
    assert best.score == 5.0 and best.rating == "Excellent"
    mid = quality_score(metrics(0.03, 0.92, 0.85, 18, 0.4), 16, 6)
    assert (mid.reconstruction_points, mid.sparsity_points, mid.interpretability_points) == (1.5, 1.5, 0.5)
    assert mid.rating == "Good"
    worst = quality_score(metrics(0.5, 0.5, 0.2, 60, 0.9), 16, 0)
    assert worst.score == 0 and worst.rating == "Poor"
    assert [rating_of(s) for s in (4.5, 3.5, 2.5, 2.49)] == ["Excellent", "Good", "Fair", "Poor"]
