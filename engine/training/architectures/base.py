"""What an SAE architecture is, as far as the lab is concerned: a small protocol.

The trainer, the SAE module, config validation, sweep specs, the app's picker and the loader of
saved SAEs read the registry (``registry.py``) and call these methods; none of them tests an
architecture's name. An architecture decides:

- which latents are active during training and with what values (``select_train`` without autograd,
  then ``activate`` with autograd on the selected entries only — the backward stays sparse);
- how the reconstruction loss is formed (``reconstruction``: one MSE, or Matryoshka's nested sum);
- its sparsity penalty (``penalty``: none, L1 or L0) and what happens after each optimiser step
  (``after_step``: thresholds, a coefficient steered towards a target L0);
- how it encodes at inference (``encode``) and what it does once training ends (``finalize``,
  e.g. BatchTopK's threshold calibration);
- whether the AuxK loss applies (``uses_auxk``);
- its SAELens on-disk mapping (``saelens_cfg`` / ``saelens_tensors`` / ``load_tensors``).

Everything an architecture adds to the module (a threshold, a steered coefficient) is registered
in ``build`` as a parameter or buffer, so checkpoints and ``.to(device)`` carry it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, NamedTuple

import torch
from torch import nn

from core.errors import LabError
from engine.training.sparse_ops import Pattern, SparseEncodeGrad, reconstruction_mse, select_relu, sparse_decode

# The SparseAutoencoder (engine.training.sae) an architecture works on; named by its base class here
# because that module imports this package.
SAE = nn.Module
Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (rows sorted ascending, cols, values)


@dataclass
class StepStats:
    """What ``after_step`` may look at: the step's active entries and its batch size."""

    cols: torch.Tensor
    vals: torch.Tensor  # detached activations of the selected entries (0 for band-only entries)
    batch: int
    l0: float  # mean active latents per token in this batch
    dead: torch.Tensor | None = None  # [d_sae] latents that have not fired for dead_after_tokens (after this step)


class Architecture:
    """Base class with the common behaviour (ReLU on the selected entries, one MSE, no penalty)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # How k is read: "exact" (k per token), "mean" (k per token on average), "target" (steered to k).
    k_meaning: ClassVar[str] = "exact"
    penalty_kind: ClassVar[str] = "none"  # none | l1 | l0
    uses_auxk: ClassVar[bool] = True
    saelens_architecture: ClassVar[str] = ""  # cfg.json "architecture" SAELens loads it as
    saelens_training_architecture: ClassVar[str] = ""  # SAELens's metadata.training_architecture
    # Learning-rate multipliers for parameters the architecture adds, by name (e.g. JumpReLU's threshold).
    lr_scale: ClassVar[dict[str, float]] = {}
    # SAEConfig fields this architecture reads (saved with the SAE so it loads back identically).
    option_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, d_in: int, d_sae: int, k: int, options: dict[str, Any] | None = None):
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        self.options = {key: (options or {}).get(key) for key in self.option_keys}
        self.check()

    # -- configuration ------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise a one-line LabError when the settings make no sense for this architecture."""

    @classmethod
    def options_from(cls, sae_cfg: Any) -> dict[str, Any]:
        """The SAEConfig fields this architecture reads, as a plain dict."""
        return {key: getattr(sae_cfg, key) for key in cls.option_keys if hasattr(sae_cfg, key)}

    def build(self, sae: SAE) -> None:
        """Register this architecture's extra parameters and buffers on the module."""

    # -- training ------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_from_batch(self, sae: SAE, pre: torch.Tensor) -> None:
        """Data-dependent initialisation from the first batch's pre-activations (fresh runs only)."""

    @torch.no_grad()
    def revive(self, sae: SAE, pre: torch.Tensor, dead: torch.Tensor) -> bool:
        """Bring latents back that have not fired for ``dead_after_tokens`` (``dead`` is a [d_sae] mask);
        return True when ``pre`` must be recomputed. AuxK (``uses_auxk``) is the other remedy."""
        return False

    def select_train(self, sae: SAE, pre: torch.Tensor) -> Triplets:
        """Entries whose values take part in this step (no autograd). ``pre`` is [batch, d_sae]."""
        raise NotImplementedError

    def activate(self, sae: SAE, pv: torch.Tensor, pattern: Pattern) -> torch.Tensor:
        """Latent values at the selected entries from their pre-activations ``pv`` (with autograd)."""
        return torch.relu(pv)

    def reconstruction(self, sae: SAE, vals: torch.Tensor, pattern: Pattern,
                       xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, mse of the full reconstruction, err = x_hat − x). Inputs already scaled."""
        mse, err = reconstruction_mse(sparse_decode(vals, sae.W_dec, pattern), xc, sae.b_dec)
        return mse, mse, err

    def penalty(self, sae: SAE, vals: torch.Tensor, pv: torch.Tensor, pattern: Pattern) -> torch.Tensor | None:
        """The sparsity term added to the loss, or None."""
        return None

    @torch.no_grad()
    def after_step(self, sae: SAE, stats: StepStats) -> dict[str, float]:
        """Runs after the optimiser step; returns extra metrics to log."""
        return {}

    @torch.no_grad()
    def finalize(self, sae: SAE, batches: Iterable[Calibration]) -> dict[str, float]:
        """Runs once after the last step with training-split batches (inputs and pre-activations)."""
        return {}

    def train_values(self, sae: SAE, pv: torch.Tensor, xc: torch.Tensor, pattern: Pattern) -> torch.Tensor:
        """The encoder's sparse backward wrapped around ``activate``: the trainer calls this."""
        return self.activate(sae, SparseEncodeGrad.apply(pv, xc, sae.W_enc_rows, sae.b_enc, sae.b_dec, pattern), pattern)

    # -- inference -----------------------------------------------------------------------------------
    def encode(self, sae: SAE, pre: torch.Tensor) -> Triplets:
        """Active latents at inference (raw pre-activations in, triplets with values > 0 out)."""
        return select_relu(pre)

    # -- SAELens layout ------------------------------------------------------------------------------
    def saelens_cfg(self, sae: SAE) -> dict[str, Any]:
        """Architecture-specific cfg.json keys (besides the shared ones the SAE writes)."""
        return {}

    def saelens_metadata(self) -> dict[str, Any]:
        """SAELens's record of how an inference-format SAE was trained (metadata.training_architecture)."""
        return {"training_architecture": self.saelens_training_architecture or self.saelens_architecture}

    def saelens_tensors(self, sae: SAE) -> dict[str, torch.Tensor]:
        """Extra tensors saved next to W_enc, b_enc, W_dec, b_dec (already in raw-activation units)."""
        return {}

    @torch.no_grad()
    def load_tensors(self, sae: SAE, tensors: dict[str, torch.Tensor]) -> None:
        """Read back what ``saelens_tensors`` wrote (or what SAELens wrote)."""


# -- helpers shared by several architectures ------------------------------------------------------------
CALIBRATION_TOKENS = 1 << 15  # training-split tokens a post-training threshold is measured on


class Calibration(NamedTuple):
    """One training-split batch handed to ``finalize``, with the final weights."""

    xc: torch.Tensor  # the inputs, scaled and centred (x · input_scale − b_dec): what the decoder reconstructs
    pre: torch.Tensor  # their pre-activations


def largest_values(pre_batches: Iterable[torch.Tensor], per_token: float, max_tokens: int) -> tuple[float, int]:
    """The (per_token · N)-th largest pre-activation over all N tokens of the batches (N ≤ max_tokens).

    This is the global threshold that makes inference keep ``per_token`` latents per token on
    average on these tokens: what BatchTopK's moving average of per-batch minima estimates, computed
    directly with the final weights. Exact: a running top-M with M = per_token · max_tokens holds every
    value that can be among the final (per_token · N) largest; once M values are held, only values
    above the smallest of them are looked at."""
    cap = max(1, int(round(per_token * max_tokens)))
    kept = torch.empty(0)
    n = 0
    for pre in pre_batches:
        n += pre.shape[0]
        flat = pre.reshape(-1)
        if kept.numel() >= cap:
            flat = flat[flat > kept.min()]
        both = torch.cat([kept.to(flat.device, flat.dtype), flat])
        kept = both.topk(cap, sorted=False).values if both.numel() > cap else both
        if n >= max_tokens:
            break
    m = min(int(round(per_token * n)), kept.numel())
    if m == 0:
        return 0.0, n
    return max(float(kept.topk(m, sorted=False).values.min()), 0.0), n


def firing_quantile(pre: torch.Tensor, k: int, d_sae: int) -> torch.Tensor:
    """Per latent, the pre-activation that k/d_sae of this batch's tokens exceed: a threshold (or minus
    a bias) at which every latent fires equally often and L0 ≈ k."""
    B = pre.shape[0]
    fire = max(1, min(B - 1, round(B * k / d_sae)))
    return pre.kthvalue(B - fire, dim=0).values


class TargetController:
    """Steers a penalty coefficient so the training L0 settles at a target (target-L0 mode).

    Adam divides each update by a running gradient scale, so the size of a fixed coefficient barely
    matters (SAELens issues #494/#719); what moves L0 is whether the penalty's gradient outweighs the
    reconstruction's. The controller changes the coefficient multiplicatively with the log of
    L0 / target (an integral controller on log L0), which finds the balance point whatever its scale:
    log c += gain · log(L0 / target)."""

    def __init__(self, gain: float = 0.05, lo: float = 1e-6, hi: float = 1e6):
        self.gain, self.lo, self.hi = gain, math.log(lo), math.log(hi)

    def update(self, coef: torch.Tensor, l0: float, target: float) -> None:
        if l0 <= 0 or target <= 0:
            step = -self.gain * 2.0  # nothing active: relax the penalty
        else:
            step = self.gain * max(-2.0, min(2.0, math.log(l0 / target)))
        coef.copy_(torch.clamp(coef.log() + step, self.lo, self.hi).exp())


def require_positive(name: str, value: Any, fix: str) -> None:
    if value is None or not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise LabError(f"{name} = {value} must be a positive number: {fix}")
