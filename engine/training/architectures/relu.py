"""ReLU + L1, the classic SAE (SAELens's ``standard``): f = ReLU(z), loss = MSE + λ · L1 / d_in.

As a default it was unusable (held-out FVU 0.53–1.02, 0–2 % of planted features recovered): λ = 3 on
inputs scaled to unit mean square is far too strong for a few hundred Adam steps, and which λ gives
a sensible L0 depends on the data. Two changes make it a fair baseline at the same k as the others:
- b_enc starts at minus each latent's (1 − k/d_sae) quantile on the first batch, so training starts
  at L0 ≈ k with every latent firing (from b_enc = 0 half of all latents fire, and the "sparse"
  backward is dense for the first hundred steps);
- target-L0 mode (``target_l0 = true``, the default): λ is steered so training settles at L0 = k
  (``base.TargetController``), the same rule as JumpReLU's. ``l1_coefficient`` is then only λ's
  starting value; with ``target_l0 = false`` it is fixed, as before.
L1 shrinks every kept activation, so at equal L0 this SAE reconstructs worse than TopK; the bench
(``python -m engine bench architectures``) reports by how much.
"""

from __future__ import annotations

import math

import torch

from core.errors import LabError
from engine.training.architectures.base import SAE, Architecture, StepStats, TargetController, Triplets, firing_quantile
from engine.training.architectures.registry import register
from engine.training.sparse_ops import Pattern, select_relu


@register
class ReLUL1(Architecture):
    name = "relu"
    summary = "ReLU with an L1 penalty steered to L0 = k (the classic baseline)"
    k_meaning = "target"
    penalty_kind = "l1"
    uses_auxk = False
    saelens_architecture = "standard"
    option_keys = ("l1_coefficient", "target_l0")

    def check(self) -> None:
        coef = self.options.get("l1_coefficient")
        if coef is not None and not (coef >= 0 and math.isfinite(coef)):
            raise LabError(f"l1_coefficient = {coef} must be a finite number >= 0: e.g. --set sae.l1_coefficient=1")
        target = self.options.get("target_l0")
        self.target = True if target is None else bool(target)
        self.controller = TargetController()

    def build(self, sae: SAE) -> None:
        start = self.options.get("l1_coefficient")
        sae.register_buffer("sparsity_coef", torch.tensor(float(start if start is not None else 3.0), dtype=torch.float64))

    @torch.no_grad()
    def init_from_batch(self, sae: SAE, pre: torch.Tensor) -> None:
        sae.b_enc.sub_(firing_quantile(pre, self.k, sae.d_sae))  # pre already includes b_enc

    @torch.no_grad()
    def revive(self, sae: SAE, pre: torch.Tensor, dead: torch.Tensor) -> bool:
        # AuxK cannot help here: a dead ReLU latent's pre-activation is negative on every token, so
        # its auxiliary value and gradient are zero. Its bias is raised instead, as at initialisation.
        sae.b_enc[dead] -= firing_quantile(pre[:, dead], self.k, sae.d_sae)
        return True

    def select_train(self, sae: SAE, pre: torch.Tensor) -> Triplets:
        return select_relu(pre)

    def penalty(self, sae: SAE, vals: torch.Tensor, pv: torch.Tensor, pattern: Pattern) -> torch.Tensor:
        return float(sae.sparsity_coef) * vals.sum() / (pattern.batch * sae.d_in)

    @torch.no_grad()
    def after_step(self, sae: SAE, stats: StepStats) -> dict[str, float]:
        if self.target:
            self.controller.update(sae.sparsity_coef, stats.l0, self.k)
        return {"sparsity_coef": float(sae.sparsity_coef)}
