"""Saved SAEs use SAELens's on-disk layout: SAELens itself loads them and computes the same outputs,
for every built-in architecture (JumpReLU with per-latent thresholds, BatchTopK and Matryoshka
BatchTopK as SAELens saves them: ``jumprelu`` with one threshold for all latents)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.config import ARCHITECTURES
from engine.training.sae import SparseAutoencoder

SAELENS_NAME = {"topk": "topk", "batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu", "jumprelu": "jumprelu",
                "relu": "standard"}


def trained_like(arch: str) -> SparseAutoencoder:
    sae = SparseAutoencoder(16, 64, arch, k=4, options={"prefixes": [8, 32]} if arch.startswith("matryoshka") else None)
    g = torch.Generator().manual_seed(0)
    sae.init_weights(g, torch.randn(16, generator=g), scale=2.5)  # a non-trivial input scale to fold
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        th = getattr(sae, "threshold", None)
        if th is not None:  # a per-latent threshold gets distinct values, a global one a single value
            th.copy_(torch.rand(th.shape, generator=g) * 0.3 if th.dim() else torch.tensor(0.05))
    return sae


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_load_round_trip_on_raw_activations(tmp_path, arch):
    sae = trained_like(arch)
    x = torch.randn(50, 16) * 3
    sae.save(tmp_path / "sae", {"model_name": "m", "hook_name": "mlp_out@2"})
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == SAELENS_NAME[arch]
    again = SparseAutoencoder.load(tmp_path / "sae")
    assert again.architecture == arch and again.arch.options == sae.arch.options
    assert float(again.input_scale) == 1.0
    assert torch.allclose(again(x), sae(x), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_saelens_loads_our_sae_and_agrees(tmp_path, arch):
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is a dev requirement (make test installs it)")
    sae = trained_like(arch)
    sae.save(tmp_path / "sae", {"model_name": "m", "hook_name": "mlp_out@2"})
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"), device="cpu")
    x = torch.randn(50, 16) * 3
    with torch.no_grad():
        ours_f = sae.encode(x).numpy()
        their_f = theirs.encode(x).numpy()
        assert (ours_f > 0).sum() > 0  # something fires, so the comparison means something
        assert np.allclose(ours_f, their_f, atol=1e-4)
        assert np.allclose(sae(x).numpy(), theirs.decode(theirs.encode(x)).numpy(), atol=1e-4)


def test_saelens_saved_jumprelu_loads_as_the_labs_jumprelu(tmp_path):
    """An SAE written by SAELens itself (no lab metadata) is read through the registry's mapping."""
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is a dev requirement (make test installs it)")
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    theirs = JumpReLUSAE(JumpReLUSAEConfig(d_in=16, d_sae=64, dtype="float32", device="cpu"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        theirs.threshold.copy_(torch.rand(64, generator=g) * 0.3)
    theirs.save_model(str(tmp_path / "theirs"))
    ours = SparseAutoencoder.load(tmp_path / "theirs")
    assert ours.architecture == "jumprelu"
    x = torch.randn(40, 16) * 3
    with torch.no_grad():
        assert np.allclose(ours.encode(x).numpy(), theirs.encode(x).numpy(), atol=1e-5)
        assert np.allclose(ours(x).numpy(), theirs.decode(theirs.encode(x)).numpy(), atol=1e-5)
    del sae_lens
