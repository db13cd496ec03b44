"""The sparse backward computes exactly the gradients dense autograd computes (a formula two ways)."""

from __future__ import annotations

import pytest
import torch

from engine.training.sparse_ops import (
    SparseEncodeGrad,
    make_pattern,
    reconstruction_mse,
    select_batch_topk,
    select_masked_topk,
    select_relu,
    select_topk,
    sparse_decode,
)


def params(d=24, n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True) for s in ((n, d), (n,), (d,), (n, d))]


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "relu", "aux"])
def test_gradients_match_dense_autograd(arch):
    torch.manual_seed(1)
    B, d, n, k = 40, 24, 96, 5
    x = torch.randn(B, d, dtype=torch.float64)
    W_enc_rows, b_enc, b_dec, W_dec = params(d, n)
    with torch.no_grad():
        pre = (x - b_dec) @ W_enc_rows.t() + b_enc
        if arch in ("topk", "aux"):
            rows, cols, _ = select_topk(pre, k)
        elif arch == "batchtopk":
            rows, cols, _ = select_batch_topk(pre, k)
        else:
            rows, cols, _ = select_relu(pre)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[::3] = True
        arows, acols, _ = select_masked_topk(pre, mask, 4)

    def dense_loss():
        pre = (x - b_dec) @ W_enc_rows.t() + b_enc
        f = torch.zeros_like(pre)
        f[rows, cols] = torch.relu(pre[rows, cols])
        x_hat = f @ W_dec + b_dec
        loss = (x_hat - x).pow(2).mean()
        if arch == "aux":
            fa = torch.zeros_like(pre)
            fa[arows, acols] = torch.relu(pre[arows, acols])
            loss = loss + 0.1 * ((fa @ W_dec) + (x_hat - x).detach()).pow(2).sum()
        return loss

    def sparse_loss():
        xc = (x - b_dec).detach()
        p = make_pattern(rows, cols, B, n)
        pv = ((xc @ W_enc_rows.t() + b_enc)[rows, cols]).detach()
        vals = torch.relu(SparseEncodeGrad.apply(pv, xc, W_enc_rows, b_enc, b_dec, p))
        mse, err = reconstruction_mse(sparse_decode(vals, W_dec, p), xc, b_dec)
        loss = mse
        if arch == "aux":
            ap = make_pattern(arows, acols, B, n)
            apv = ((xc @ W_enc_rows.t() + b_enc)[arows, acols]).detach()
            avals = torch.relu(SparseEncodeGrad.apply(apv, xc, W_enc_rows, b_enc, b_dec, ap))
            loss = loss + 0.1 * (sparse_decode(avals, W_dec, ap) + err).pow(2).sum()
        return loss

    grads = []
    for fn in (dense_loss, sparse_loss):
        for t in (W_enc_rows, b_enc, b_dec, W_dec):
            t.grad = None
        loss = fn()
        loss.backward()
        grads.append((loss.detach().item(), [t.grad.clone() for t in (W_enc_rows, b_enc, b_dec, W_dec)]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-10)
    for a, b in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)


def test_batch_topk_keeps_k_per_token_on_average():
    pre = torch.randn(50, 200)
    rows, cols, vals = select_batch_topk(pre, 7)
    assert len(vals) == 350 and bool((vals > 0).all())
    assert torch.equal(rows, rows.sort().values)


@pytest.mark.parametrize("shape,k", [((512, 2048), 16), ((300, 2048), 48), ((64, 4096), 32), ((100, 1000), 16),
                                     ((50, 256), 16), ((40, 1001), 16)])
def test_grouped_topk_finds_exactly_torch_topk_values(shape, k):
    """Random rows, and rows of small integers where ties at the k-th value are everywhere."""
    from engine.training.sparse_ops import topk_rows

    g = torch.Generator().manual_seed(k)
    for pre in (torch.randn(shape, generator=g), torch.randint(0, 6, shape, generator=g).float()):
        v, i = topk_rows(pre, k)
        want = pre.topk(k, dim=-1).values
        assert torch.equal(v.sort(-1, descending=True).values, want)
        assert torch.equal(pre.gather(1, i), v)  # the indices point at those values
        assert all(len(set(row.tolist())) == k for row in i)  # and no column twice
