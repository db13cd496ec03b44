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
L1 shrinks every kept activation (each active latent's value is pulled towards 0 by λ), so at equal
L0 it reconstructs worse than TopK. Once training ends, ``finalize`` undoes the shrinkage: each
latent's gain is refitted by least squares on training-split tokens (the decoder reconstructs
x from g ⊙ f; the normal equations are d_sae × d_sae) and folded into its encoder row and bias
(g · ReLU(z) = ReLU(g · z) for g > 0), so which latents fire -- and L0 -- do not change, only how
strongly. This is the "feature suppression" fix of Wright & Sharkey (2024), solved in closed form
instead of fine-tuned. On code at L0 8 it took held-out FVU from 1.52-1.55× TopK's to 1.34-1.37×
(three seeds, README).
The bench (``python -m engine bench architectures``) reports the gap.
"""

from __future__ import annotations

import math
from typing import Iterable

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
)
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

    @torch.no_grad()
    def finalize(self, sae: SAE, batches: Iterable[Calibration]) -> dict[str, float]:
        gains, n = least_squares_gains(sae, batches, CALIBRATION_TOKENS)
        if n:
            sae.W_enc_rows.mul_(gains.to(sae.W_enc_rows.device, sae.W_enc_rows.dtype)[:, None])
            sae.b_enc.mul_(gains.to(sae.b_enc.device, sae.b_enc.dtype))
        return {"gain_median": float(gains.median()) if n else 1.0, "gain_tokens": float(n)}


# A latent's refitted gain stays in [MIN_GAIN, MAX_GAIN]: a gain <= 0 would switch the latent off (or
# flip it), and one fitted on a handful of firings is noise; RIDGE pulls weakly determined gains to 1.
MIN_GAIN, MAX_GAIN, RIDGE = 0.05, 20.0, 1e-3


def least_squares_gains(sae: SAE, batches: Iterable[Calibration], max_tokens: int) -> tuple[torch.Tensor, int]:
    """Per-latent gains g minimising Σ_t ||xc_t − Σ_i g_i f_ti W_dec[i]||² over up to ``max_tokens``
    training tokens, with the active latents f as the SAE encodes them now.

    Normal equations: (G ∘ W Wᵀ) g = r, with G = Σ_t f_t f_tᵀ (sparse: a token's few active pairs)
    and r_i = Σ_t f_ti (W_dec[i] · xc_t), in float64; a small ridge towards g = 1 keeps latents that
    rarely fire near their trained scale. Latents that never fire keep gain 1. Solved on the CPU
    (float64, which MPS lacks), whatever device trained the SAE."""
    F = sae.d_sae
    W = sae.W_dec.detach().cpu().double()
    G = torch.zeros(F, F, dtype=torch.float64)
    r = torch.zeros(F, dtype=torch.float64)
    n = 0
    for b in batches:
        take = min(b.pre.shape[0], max_tokens - n)
        if take <= 0:
            break
        rows, cols, vals = select_relu(b.pre[:take].cpu())
        v = vals.double()
        f = torch.sparse_coo_tensor(torch.stack([rows, cols]), v, (take, F), check_invariants=False).coalesce()
        G += torch.sparse.mm(f.t(), f).to_dense()
        r.index_add_(0, cols, v * (b.xc[:take].cpu().double()[rows] * W[cols]).sum(1))
        n += take
    if n == 0:
        return torch.ones(F), 0
    A = G * (W @ W.t())
    diag = A.diagonal().clone()
    fired = diag > 0
    ridge = RIDGE * diag.clamp_min(diag[fired].mean() if fired.any() else 1.0)
    A.diagonal().add_(ridge)
    gains = torch.linalg.solve(A, r + ridge)
    gains = torch.where(fired, gains, torch.ones_like(gains)).clamp(MIN_GAIN, MAX_GAIN)
    return gains.float(), n
