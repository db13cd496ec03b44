"""TopK (Gao et al. 2024, arXiv 2406.04093): exactly the k largest pre-activations of every token."""

from __future__ import annotations

from typing import Any

import torch

from engine.training.architectures.base import SAE, Architecture, Triplets
from engine.training.architectures.registry import register
from engine.training.sparse_ops import select_topk


@register
class TopK(Architecture):
    name = "topk"
    summary = "k largest pre-activations per token (L0 = k exactly); AuxK keeps latents alive"
    k_meaning = "exact"
    saelens_architecture = "topk"

    def select_train(self, sae: SAE, pre: torch.Tensor) -> Triplets:
        return select_topk(pre, self.k)

    def encode(self, sae: SAE, pre: torch.Tensor) -> Triplets:
        rows, cols, vals = select_topk(pre, self.k)
        return rows, cols, vals.clamp_min(0)

    def saelens_cfg(self, sae: SAE) -> dict[str, Any]:
        return {"k": self.k, "rescale_acts_by_decoder_norm": False}
