"""JumpReLU (Rajamanoharan et al. 2024, arXiv 2407.14435): a learned threshold per latent.

f_j = z_j · H(z_j − θ_j) with z = W_enc (x − b_dec) + b_enc; loss = reconstruction + λ · L0 / d_in
(the lab's MSE is a mean over dimensions, hence the 1/d_in). H has no useful gradient, so θ gets a
straight-through pseudo-gradient through a rectangle kernel K(u) = 1{|u| < 1/2} of bandwidth ε:
  ∂f/∂θ ≈ −(θ/ε) K((z − θ)/ε),   ∂L0/∂θ ≈ −(1/ε) K((z − θ)/ε),
and z gets the ordinary gradient only where the latent is active (DeepMind's form; SAELens's
``jumprelu_ste_to_input = False``). Both pseudo-gradients are non-zero only for z > θ − ε/2, so the
training selection is exactly those entries — the active ones plus the band just below threshold
(value 0, but their reconstruction gradient reaches θ). Their number varies per token; the sparse
backward takes them as (row, col) lists like any other selection.

Initialisation: θ_j at the value that z_j exceeds on k/d_sae of the first batch's tokens, so training
starts at L0 ≈ k with every latent firing (instead of SAELens's θ = 0.01, where about half of all
latents fire at first and the sparse backward would be nearly dense).

Target-L0 mode (``target_l0 = true``, the default): λ is steered so training settles at L0 = k.
With Adam the plain λ barely moves L0 (measured in the README; SAELens issues #494/#719): Adam's
per-parameter normalisation makes θ's step about lr whatever λ's size, so λ matters only through
the sign of θ's total gradient. The integral controller in ``base.TargetController`` finds the λ
where that sign balances at L0 = k. SAELens's alternative, the quadratic penalty
(2/k)(L0 − k)² of Gemma Scope 2, is a fixed-λ form of the same idea.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from core.errors import LabError
from engine.training.architectures.base import (
    CALIBRATION_TOKENS,
    SAE,
    Architecture,
    Calibration,
    StepStats,
    TargetController,
    Triplets,
    firing_quantile,
    largest_values,
    require_positive,
)
from engine.training.architectures.registry import register
from engine.training.sparse_ops import Pattern, select_relu

STE_TO_INPUT = False  # DeepMind's form; passing the STE to the pre-activations too was worse (README)
# ε in the units of pre-activations of unit-mean-square inputs (the same units as SAELens's 0.05). On
# the default activations ε = 0.05 … 1 gave the same held-out FVU (0.316 at L0 16); on planted
# features wider was better (mean best cosine 0.92 / 0.95 / 0.97 at ε = 0.05 / 0.5 / 1 on uniform
# features; 0.89 vs 0.92 at ε = 0.5 / 1 with Zipf frequencies). A wider band selects more entries
# below threshold: at L0 32, 1.1× TopK's step time.
DEFAULT_BANDWIDTH = 1.0


def rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUValues(torch.autograd.Function):
    """vals = pv · 1{pv > θ[cols]} on the selected entries, with the rectangle-kernel STE for θ."""

    @staticmethod
    def forward(ctx, pv, threshold, cols, bandwidth, ste_to_input=False):
        th = threshold[cols]
        ctx.save_for_backward(pv, th, cols)
        ctx.bandwidth, ctx.d_sae, ctx.ste_to_input = bandwidth, threshold.shape[0], ste_to_input
        return pv * (pv > th).to(pv.dtype)

    @staticmethod
    def backward(ctx, g):
        pv, th, cols = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pv = g * (pv > th).to(g.dtype)
        ste = (th / eps) * rectangle((pv - th) / eps) * g
        if ctx.ste_to_input:
            grad_pv = grad_pv + ste
        grad_th = torch.zeros(ctx.d_sae, dtype=g.dtype, device=g.device).index_add_(0, cols, -ste)
        return grad_pv, grad_th, None, None, None


class StepCount(torch.autograd.Function):
    """Σ 1{pv > θ[cols]} (the batch's total L0), with the rectangle-kernel STE for θ only."""

    @staticmethod
    def forward(ctx, pv, threshold, cols, bandwidth):
        th = threshold[cols]
        ctx.save_for_backward(pv, th, cols)
        ctx.bandwidth, ctx.d_sae = bandwidth, threshold.shape[0]
        return (pv > th).to(pv.dtype).sum()

    @staticmethod
    def backward(ctx, g):
        pv, th, cols = ctx.saved_tensors
        eps = ctx.bandwidth
        ste = (g / eps) * rectangle((pv - th) / eps)
        grad_th = torch.zeros(ctx.d_sae, dtype=pv.dtype, device=pv.device).index_add_(0, cols, -ste)
        return None, grad_th, None, None


@register
class JumpReLU(Architecture):
    name = "jumprelu"
    summary = "learned per-latent thresholds (rectangle-kernel STE) with an L0 penalty steered to L0 = k"
    k_meaning = "target"
    penalty_kind = "l0"
    saelens_architecture = "jumprelu"
    saelens_training_architecture = "jumprelu"
    option_keys = ("bandwidth", "l0_coefficient", "target_l0")
    # θ is O(1) (pre-activations of unit-mean-square inputs) and Adam moves it about lr per step: at the
    # lab's lr and few hundred steps it barely moved (mean 2.44 → 2.25 in 258 steps, L0 ended 25 % under
    # target). Ten times the lr lets it follow the penalty (README, JumpReLU notes).
    lr_scale = {"threshold": 10.0}

    def check(self) -> None:
        require_positive("bandwidth", self.options.get("bandwidth") or DEFAULT_BANDWIDTH, "e.g. --set sae.bandwidth=0.5")
        coef = self.options.get("l0_coefficient")
        if coef is not None and not (coef >= 0 and math.isfinite(coef)):
            raise LabError(f"l0_coefficient = {coef} must be a finite number >= 0: e.g. --set sae.l0_coefficient=1")
        self.bandwidth = float(self.options.get("bandwidth") or DEFAULT_BANDWIDTH)
        target = self.options.get("target_l0")
        self.target = True if target is None else bool(target)
        self.controller = TargetController()

    def build(self, sae: SAE) -> None:
        sae.threshold = torch.nn.Parameter(torch.full((sae.d_sae,), 0.01))  # SAELens's init, until the first batch
        start = self.options.get("l0_coefficient")
        sae.register_buffer("sparsity_coef", torch.tensor(float(start if start is not None else 1.0), dtype=torch.float64))

    @torch.no_grad()
    def init_from_batch(self, sae: SAE, pre: torch.Tensor) -> None:
        sae.threshold.copy_(firing_quantile(pre, self.k, sae.d_sae).clamp_min(self.bandwidth))

    @torch.no_grad()
    def revive(self, sae: SAE, pre: torch.Tensor, dead: torch.Tensor) -> bool:
        # A latent whose pre-activations all stay below θ − ε/2 gets no gradient at all, and Adam's
        # momentum can carry a rarely-firing latent's θ out of reach: without this, 7–25 % of latents
        # ended dead. Its θ is lowered to where it fires on k/d_sae of the batch, as at initialisation.
        th = firing_quantile(pre[:, dead], self.k, sae.d_sae).clamp_min(self.bandwidth)
        sae.threshold[dead] = torch.minimum(sae.threshold[dead], th)
        return False

    def select_train(self, sae: SAE, pre: torch.Tensor) -> Triplets:
        band = sae.threshold.detach() - self.bandwidth / 2  # compared in fp32 also with a bf16 pre
        rows, cols = (pre > band).nonzero(as_tuple=True)
        return rows, cols, pre[rows, cols]

    def activate(self, sae: SAE, pv: torch.Tensor, pattern: Pattern) -> torch.Tensor:
        return JumpReLUValues.apply(pv, sae.threshold, pattern.cols, self.bandwidth, STE_TO_INPUT)

    def penalty(self, sae: SAE, vals: torch.Tensor, pv: torch.Tensor, pattern: Pattern) -> torch.Tensor:
        l0 = StepCount.apply(pv.detach(), sae.threshold, pattern.cols, self.bandwidth) / pattern.batch
        return float(sae.sparsity_coef) * l0 / sae.d_in

    @torch.no_grad()
    def after_step(self, sae: SAE, stats: StepStats) -> dict[str, float]:
        sae.threshold.clamp_(min=0.0)  # SAELens projects θ ≥ 0 (below zero the gate passes negatives)
        if self.target:
            self.controller.update(sae.sparsity_coef, stats.l0, self.k)
        return {"sparsity_coef": float(sae.sparsity_coef)}

    @torch.no_grad()
    def finalize(self, sae: SAE, batches: Iterable[Calibration]) -> dict[str, float]:
        """Target-L0 mode: scale every θ by one factor so that L0 on training-split tokens is k.

        The controller steers a moving average of the batches' L0, so training ends a few per cent off
        (8.18 for k = 8 on prose); held-out tokens of a different module then read higher still (8.9).
        The factor is the (k·N)-th largest ratio z / θ over N tokens — exact, like BatchTopK's global
        threshold — and it is close to 1, so reconstruction barely moves."""
        if not self.target:
            return {}
        theta = sae.threshold.detach().clamp_min(1e-6)
        ratios = (b.pre / theta.to(b.pre.dtype) for b in batches)
        factor, n = largest_values(ratios, self.k, max_tokens=CALIBRATION_TOKENS)
        if n and factor > 0:
            sae.threshold.mul_(factor)
        return {"threshold_factor": factor, "threshold_tokens": float(n)}

    def encode(self, sae: SAE, pre: torch.Tensor) -> Triplets:
        th = sae.threshold.detach().to(pre.dtype)
        return select_relu(torch.where(pre > th, pre, torch.zeros((), dtype=pre.dtype, device=pre.device)))

    def saelens_tensors(self, sae: SAE) -> dict[str, torch.Tensor]:
        return {"threshold": sae.threshold.detach().float().clone()}

    @torch.no_grad()
    def load_tensors(self, sae: SAE, tensors: dict[str, Any]) -> None:
        if "threshold" in tensors:
            sae.threshold.copy_(tensors["threshold"].float())
        elif "log_threshold" in tensors:  # older SAELens checkpoints
            sae.threshold.copy_(tensors["log_threshold"].float().exp())
