"""Saved SAEs use SAELens's on-disk layout: SAELens itself loads them and computes the same outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.training.sae import SparseAutoencoder


def trained_like(arch: str) -> SparseAutoencoder:
    sae = SparseAutoencoder(16, 64, arch, k=4)
    g = torch.Generator().manual_seed(0)
    sae.init_weights(g, torch.randn(16, generator=g), scale=2.5)  # a non-trivial input scale to fold
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        sae.threshold.fill_(0.05)
    return sae


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "relu"])
def test_save_load_round_trip_on_raw_activations(tmp_path, arch):
    sae = trained_like(arch)
    x = torch.randn(50, 16) * 3
    sae.save(tmp_path / "sae", {"model_name": "m", "hook_name": "mlp_out@2"})
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == {"topk": "topk", "batchtopk": "jumprelu", "relu": "standard"}[arch]
    again = SparseAutoencoder.load(tmp_path / "sae")
    assert float(again.input_scale) == 1.0
    assert torch.allclose(again(x), sae(x), atol=1e-5)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "relu"])
def test_saelens_loads_our_sae_and_agrees(tmp_path, arch):
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is a dev requirement (make test installs it)")
    sae = trained_like(arch)
    sae.save(tmp_path / "sae", {"model_name": "m", "hook_name": "mlp_out@2"})
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"), device="cpu")
    x = torch.randn(50, 16) * 3
    with torch.no_grad():
        ours_f = sae.encode(x).numpy()
        their_f = theirs.encode(x).numpy()
        assert np.allclose(ours_f, their_f, atol=1e-4)
        assert np.allclose(sae(x).numpy(), theirs.decode(theirs.encode(x)).numpy(), atol=1e-4)
