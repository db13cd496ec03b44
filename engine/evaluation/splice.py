"""Splice fidelity: run the model with the SAE's reconstruction in place of the hooked activation.

Causal LMs: next-token cross-entropy clean / spliced / zero-ablated, CE loss recovered =
(CE_zero − CE_sae) / (CE_zero − CE_clean), and KL(clean ‖ spliced) averaged over positions.
Encoders: cosine between the mean-pooled sentence embedding (sentence-transformers' pooling) with
and without the splice, and the same for zero-ablation; recovered = (cos_sae − cos_zero) / (1 − cos_zero).
Only positions whose activations the SAE was trained on are replaced (special tokens stay clean).

A recovered ratio divides by what zero-ablating the site costs. When that is float32 noise (1e-7 nats
on a tiny model, where CE recovered read −734), the ratio means nothing: below ``MIN_RELATIVE_GAP``
of the clean value it is left NULL and ``note`` says why.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.collection.hooks import hook_module, replace_output
from engine.collection.models import LoadedModel
from engine.training.sae import SparseAutoencoder


@dataclass
class SpliceMetrics:
    kind: str
    n_sequences: int
    ce_clean: float | None = None
    ce_sae: float | None = None
    ce_zero: float | None = None
    ce_recovered: float | None = None
    kl_sae: float | None = None
    kl_zero: float | None = None
    emb_cos_sae: float | None = None
    emb_cos_zero: float | None = None
    emb_cos_recovered: float | None = None
    note: str | None = None  # why a recovered ratio is NULL

    def to_dict(self) -> dict:
        return asdict(self)


MIN_RELATIVE_GAP = 1e-3  # |zero − clean| below this share of the clean value: the ratio is noise


def recovered(zero: float, sae: float, clean: float, what: str) -> tuple[float | None, str | None]:
    """(zero − sae) / (zero − clean), or (None, the reason) when zero-ablation barely changes ``what``."""
    gap = zero - clean
    if abs(gap) < MIN_RELATIVE_GAP * max(abs(clean), 1e-12):
        return None, (f"{what} recovered left empty: zero-ablating the site changes {what} by {gap:.2g} "
                      f"(< {MIN_RELATIVE_GAP:.1%} of the clean {clean:.4g}), so the ratio would be noise")
    return (zero - sae) / gap, None


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def model_outputs(loaded: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """Logits for causal LMs, mean-pooled last hidden state for encoders."""
    mask = torch.ones_like(ids)
    out = loaded.model(input_ids=ids, attention_mask=mask)
    if loaded.info.is_causal:
        return out.logits.float()
    return mean_pool(out.last_hidden_state.float(), mask)


class ReferenceOutputs:
    """The clean and zero-ablated outputs of the last few batches, kept per process.

    They depend on the model, the site and the tokens, not on the SAE: the SAEs of a share group
    (same layer, hook and held-out text) are evaluated one after another in one worker, and each
    would otherwise rerun the same two of its three model passes. Only small outputs are kept (an
    encoder's pooled embeddings: a causal model's logits are vocabulary-wide)."""

    MAX_ENTRIES = 64
    MAX_BYTES = 1 << 20  # per entry

    def __init__(self) -> None:
        self.entries: dict[tuple, torch.Tensor] = {}

    def get(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key in self.entries:
            return self.entries[key]
        out = compute()
        if out.numel() * out.element_size() <= self.MAX_BYTES:
            if len(self.entries) >= self.MAX_ENTRIES:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = out
        return out


_REFERENCE = ReferenceOutputs()


def _batch_key(loaded: LoadedModel, hook: str, layer: int, ids: torch.Tensor, keep: torch.Tensor) -> tuple:
    digest = hashlib.sha1(ids.cpu().numpy().tobytes() + keep.cpu().numpy().tobytes()).hexdigest()
    return (loaded.info.path, str(loaded.device), hook, layer, tuple(ids.shape), digest)


def site_editor(sae: SparseAutoencoder, keep: torch.Tensor,
                edit: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A hook function replacing the activations at ``keep`` positions with ``edit(acts)``."""

    def fn(out: torch.Tensor) -> torch.Tensor:
        new = out.clone()
        new[keep] = edit(out[keep].float()).to(out.dtype)
        return new

    return fn


@torch.no_grad()
def splice_fidelity(
    loaded: LoadedModel,
    sae: SparseAutoencoder,
    hook: str,
    layer: int,
    tokens: np.ndarray,
    keep: np.ndarray,
    batch_size: int = 16,
) -> SpliceMetrics:
    info = loaded.info
    module = hook_module(loaded.model, info.model_type, info.n_layers, hook, layer)
    sae = sae.to(loaded.device).eval()
    sums = {"ce_clean": 0.0, "ce_sae": 0.0, "ce_zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0, "cos_sae": 0.0, "cos_zero": 0.0}
    n_pos = 0
    n_seq = 0
    for start in range(0, len(tokens), batch_size):
        ids = torch.from_numpy(np.asarray(tokens[start : start + batch_size], dtype=np.int64)).to(loaded.device)
        k = torch.from_numpy(np.asarray(keep[start : start + batch_size])).to(loaded.device)
        outs = {}
        key = _batch_key(loaded, hook, layer, ids, k)
        for name, ctx in (
            ("clean", nullcontext()),
            ("sae", replace_output(module, site_editor(sae, k, lambda a: sae(a)))),
            ("zero", replace_output(module, site_editor(sae, k, torch.zeros_like))),
        ):

            def run(ctx=ctx) -> torch.Tensor:
                with ctx:
                    return model_outputs(loaded, ids)

            outs[name] = run() if name == "sae" else _REFERENCE.get((name, *key), run)
        n_seq += len(ids)
        if info.is_causal:
            targets = ids[:, 1:]
            valid = k[:, 1:]  # predict only ordinary tokens
            logp = {n: F.log_softmax(o[:, :-1], -1) for n, o in outs.items()}
            for n in ("clean", "sae", "zero"):
                nll = -logp[n].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                sums[f"ce_{n}"] += float(nll[valid].sum())
            p_clean = logp["clean"].exp()
            for n in ("sae", "zero"):
                kl = (p_clean * (logp["clean"] - logp[n])).sum(-1)
                sums[f"kl_{n}"] += float(kl[valid].sum())
            n_pos += int(valid.sum())
        else:
            for n in ("sae", "zero"):
                sums[f"cos_{n}"] += float(F.cosine_similarity(outs["clean"], outs[n], dim=-1).sum())
    if info.is_causal:
        p = max(n_pos, 1)
        ce = {n: sums[f"ce_{n}"] / p for n in ("clean", "sae", "zero")}
        rec, note = recovered(ce["zero"], ce["sae"], ce["clean"], "CE")
        return SpliceMetrics(
            "causal", n_seq, ce["clean"], ce["sae"], ce["zero"], rec,
            sums["kl_sae"] / p, sums["kl_zero"] / p, note=note,
        )
    c_sae, c_zero = sums["cos_sae"] / max(n_seq, 1), sums["cos_zero"] / max(n_seq, 1)
    # The clean embedding's cosine with itself is 1: the same rule with 1 as the clean value, since
    # (c_zero − c_sae) / (c_zero − 1) = (c_sae − c_zero) / (1 − c_zero).
    rec, note = recovered(c_zero, c_sae, 1.0, "embedding cosine")
    return SpliceMetrics("encoder", n_seq, emb_cos_sae=c_sae, emb_cos_zero=c_zero, emb_cos_recovered=rec, note=note)
