"""Matryoshka BatchTopK (Bussmann et al. 2025, arXiv 2503.17547): nested dictionaries in one SAE.

The first p₁ latents must reconstruct the input on their own, so must the first p₂ > p₁, and so on up
to the whole dictionary; the losses are summed. General, frequent concepts settle in the small
prefixes and are not absorbed into their specialisations (less feature absorption, better sparse
probing, slightly worse reconstruction than plain BatchTopK; SAELens warns of "feature hedging" when
an inner prefix is very narrow). Selection is BatchTopK's and inference uses its calibrated global
threshold; SAELens saves it for inference as ``jumprelu`` with ``training_architecture =
matryoshka_batchtopk``, and so does the lab.

The decode stays sparse: every active entry belongs to one prefix level (by its latent index), one
``embedding_bag`` sums the entries of each (token, level) pair, and a cumulative sum over the levels
gives every prefix's reconstruction from the same active entries.
"""

from __future__ import annotations

from typing import Any

import torch

from core.errors import LabError
from engine.training.architectures.base import SAE
from engine.training.architectures.batchtopk import BatchTopK
from engine.training.architectures.registry import register
from engine.training.sparse_ops import Pattern, make_pattern, sparse_decode


class NestedMSE(torch.autograd.Function):
    """Per prefix level i: ||Σ_{l ≤ i} parts_l + b_dec − x||² / (B·d), with xc = x − b_dec given.

    One function instead of autograd's cumsum (whose backward flips and re-sums the [B, m, d] tensor:
    a third of Matryoshka's step time): the errors are running sums, and the gradient of level l's
    part is the reverse running sum of the errors. Also returns the full reconstruction's error."""

    @staticmethod
    def forward(ctx, parts, xc, b_dec):
        B, m, d = parts.shape
        errs = torch.empty_like(parts)
        torch.sub(parts[:, 0], xc, out=errs[:, 0])
        for i in range(1, m):
            torch.add(errs[:, i - 1], parts[:, i], out=errs[:, i])
        per_level = errs.pow(2).sum((0, 2)) / (B * d)
        ctx.save_for_backward(errs)
        last = errs[:, -1].clone()
        ctx.mark_non_differentiable(last)
        return per_level, last

    @staticmethod
    def backward(ctx, g_levels, _g_err):
        (errs,) = ctx.saved_tensors
        B, m, d = errs.shape
        w = g_levels * (2.0 / (B * d))
        grad = torch.empty_like(errs)
        running = errs[:, m - 1] * w[m - 1]
        grad[:, m - 1] = running
        for i in range(m - 2, -1, -1):
            running = running + errs[:, i] * w[i]
            grad[:, i] = running
        return grad, None, grad[:, 0].sum(0)


def default_prefixes(d_sae: int) -> list[int]:
    """d_sae/16, d_sae/4, d_sae (128, 512, 2048 at the default width)."""
    return sorted({max(1, d_sae // 16), max(1, d_sae // 4), d_sae})


@register
class MatryoshkaBatchTopK(BatchTopK):
    name = "matryoshka_batchtopk"
    summary = "BatchTopK whose nested prefixes (default d_sae/16, d_sae/4, all) each reconstruct on their own"
    saelens_training_architecture = "matryoshka_batchtopk"
    option_keys = ("prefixes",)

    def check(self) -> None:
        given = self.options.get("prefixes")
        widths = list(given) if given else default_prefixes(self.d_sae)
        if widths[-1] != self.d_sae:
            widths.append(self.d_sae)
        if any(not isinstance(w, int) or w < 1 for w in widths) or any(a >= b for a, b in zip(widths, widths[1:])):
            raise LabError(f"matryoshka prefixes {given} must be increasing whole numbers between 1 and d_sae = {self.d_sae}: "
                           "e.g. [128, 512]")
        self.widths = widths

    def reconstruction(self, sae: SAE, vals: torch.Tensor, pattern: Pattern,
                       xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, d = xc.shape
        m = len(self.widths)
        bounds = torch.tensor(self.widths[:-1], dtype=pattern.cols.dtype, device=pattern.cols.device)
        level = torch.bucketize(pattern.cols, bounds, right=True)  # the prefix level each latent enters at
        key = pattern.rows * m + level
        order = torch.argsort(key, stable=True)
        by_level = make_pattern(key[order], pattern.cols[order], B * m, sae.d_sae)
        parts = sparse_decode(vals[order], sae.W_dec, by_level).view(B, m, d)
        per_level, err = NestedMSE.apply(parts, xc, sae.b_dec)
        return per_level.sum(), per_level[-1], err

    def saelens_metadata(self) -> dict[str, Any]:
        return {**super().saelens_metadata(), "training_architecture_details": {"matryoshka_widths": self.widths, "k": self.k}}
