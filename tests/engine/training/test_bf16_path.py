"""The bf16 training path: its encoder result stays bf16 and the selection runs on it, so it must pick
what fp32 picks wherever bf16 keeps the values apart, and the selected entries still get exact fp32
values (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import SAEConfig, TrainConfig
from engine.training.data import ShuffledBatches
from engine.training.sparse_ops import select_batch_topk, select_masked_topk, select_relu, select_topk
from engine.training.trainer import Trainer, init_sae_from_store_stats


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tie_free(B: int, n: int, seed: int = 0) -> torch.Tensor:
    """Every row a permutation of -n/2 .. n/2 - 1: distinct, and exact in bf16 (n <= 512)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g) for _ in range(B)]).float() - n // 2


def as_set(rows: torch.Tensor, cols: torch.Tensor) -> set[tuple[int, int]]:
    return set(zip(rows.tolist(), cols.tolist()))


@pytest.mark.parametrize("n, k", [(256, 16), (256, 5), (96, 7)])  # the grouped top-k path, and torch.topk
def test_selection_on_bf16_picks_the_latents_fp32_picks(n, k):
    pre = tie_free(64, n)
    low = pre.bfloat16()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::3] = True
    for select in (lambda p: select_topk(p, k), lambda p: select_batch_topk(p, k), select_relu,
                   lambda p: select_masked_topk(p, mask, 4)):
        r32, c32, v32 = select(pre)
        r16, c16, v16 = select(low)
        assert v16.dtype == torch.bfloat16
        assert as_set(r16, c16) == as_set(r32, c32)
        assert torch.equal(r16, r16.sort().values)  # sorted by row, as the patterns expect
        assert torch.equal(pre[r16, c16], v16.float())  # the values at the indices returned


def small_trainer(matmul_dtype: str, architecture: str = "topk", seed: int = 0) -> tuple[Trainer, np.ndarray]:
    X = np.random.default_rng(seed).standard_normal((3000, 16)).astype(np.float32)
    sae_cfg = SAEConfig(architecture=architecture, d_sae=64, k=4)
    cfg = TrainConfig(batch_size=256, epochs=2, matmul_dtype=matmul_dtype, dead_after_tokens=1000)
    sae = init_sae_from_store_stats(16, sae_cfg, X.mean(0), float((X**2).sum(1).mean()), seed=0)
    return Trainer(sae, sae_cfg, cfg, ShuffledBatches(X, 0, len(X), 256, 0), torch.device("cpu")), X


def test_bf16_selected_entries_get_exact_fp32_values():
    tr, X = small_trainer("bfloat16")
    sae = tr.sae
    x = torch.from_numpy(X[:256]) * sae.input_scale
    with torch.no_grad():
        xc = x - sae.b_dec
        pre = tr._encoder_pre(xc)
        assert pre.dtype == torch.bfloat16  # no fp32 copy of the whole result
        exact = xc @ sae.W_enc_rows.t() + sae.b_enc
        assert torch.allclose(pre.float(), exact, rtol=2e-2, atol=5e-2)
        rows, cols, _ = select_topk(pre, 4)
        assert torch.allclose(tr._exact_pre(xc, rows, cols), exact[rows, cols], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("architecture", ["topk", "jumprelu", "relu"])
def test_same_seed_bf16_runs_end_bit_identical(architecture):
    ends = []
    for _ in range(2):
        tr, _ = small_trainer("bfloat16", architecture)
        tr.run(resume=False)
        ends.append(tr.sae.state_dict())
    assert all(torch.equal(ends[0][name], ends[1][name]) for name in ends[0])
