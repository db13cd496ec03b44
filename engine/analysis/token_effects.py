"""Which tokens a feature's decoder direction pushes up and down.

Causal LMs: the direction through the unembedding (the "logit lens" of sae_vis / Neuronpedia,
without the final norm). Encoders have no unembedding, so the direction is read against the
token embedding matrix instead: the tokens whose input embeddings it most resembles. Either way
the matrix is centred over the vocabulary first -- adding the same amount to every logit changes
nothing, and for embeddings the shared mean would otherwise rank the same tokens first for every
feature. Special and unused tokens are excluded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from engine.analysis.vocab import Vocab

BLOCK = 1024


@dataclass
class TokenEffects:
    source: str  # "unembedding" | "embedding" | "" when the widths do not match
    up_ids: np.ndarray  # [F, n]
    up_vals: np.ndarray
    down_ids: np.ndarray
    down_vals: np.ndarray


INPUT_NAMES = ("word_embeddings.weight", "embed_tokens.weight", "wte.weight", "embed_in.weight", "shared.weight")
OUTPUT_NAMES = ("lm_head.weight", "embed_out.weight")


def read_effect_matrix(folder: str | Path, is_causal: bool, d_model: int, min_rows: int) -> tuple[torch.Tensor | None, str]:
    """The [V, d] matrix straight from a model folder's safetensors, without building the model.

    Building a transformers model costs seconds of imports that a cold ``analyze`` would wait for;
    the one tensor it needs is a named slice of the weights file. Returns (None, "") when the
    folder holds no recognisable tensor, and the caller loads the model instead."""
    folder = Path(folder)
    if not folder.is_dir():
        return None, ""

    found: dict[str, tuple[Path, str]] = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                shape = h.get_slice(k).get_shape()
                if len(shape) != 2 or shape[1] != d_model or shape[0] < min_rows:
                    continue
                for kind, names in (("unembedding", OUTPUT_NAMES), ("embedding", INPUT_NAMES)):
                    if k.endswith(names) and kind not in found:
                        found[kind] = (f, k)
    order = ("unembedding", "embedding") if is_causal else ("embedding",)
    for kind in order:  # a causal LM with tied weights has no separate unembedding: its embedding is it
        if kind in found:
            f, k = found[kind]
            with safe_open(str(f), "pt") as h:
                return h.get_tensor(k).float().clone(), "unembedding" if is_causal else "embedding"  # off the mmap
    return None, ""


def effect_matrix(model: torch.nn.Module, is_causal: bool) -> tuple[torch.Tensor | None, str]:
    """[V, d] matrix the directions are read through, from a loaded model."""
    if is_causal:
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if out is not None and getattr(out, "weight", None) is not None:
            return out.weight.detach().float(), "unembedding"
    emb = model.get_input_embeddings()
    return emb.weight.detach().float(), "embedding"


@torch.inference_mode()
def compute_token_effects(W_dec: torch.Tensor, matrix: torch.Tensor | None, source: str, vocab: Vocab, n: int) -> TokenEffects:
    F = W_dec.shape[0]
    empty = np.zeros((F, 0), np.int64)
    if matrix is None or matrix.shape[1] != W_dec.shape[1] or n == 0:
        return TokenEffects("", empty, empty.astype(float), empty, empty.astype(float))
    V = matrix.shape[0]
    keep = torch.ones(V, dtype=torch.bool)
    ex = vocab.excluded[: V]
    keep[: len(ex)] = torch.from_numpy(~ex)
    keep[min(vocab.size, V):] = False
    idx = keep.nonzero().squeeze(1)
    M = matrix[idx]
    M = M - M.mean(0, keepdim=True)
    D = torch.nn.functional.normalize(W_dec.detach().float(), dim=1)
    n = min(n, len(idx))
    ups, upv, downs, downv = [], [], [], []
    for a in range(0, F, BLOCK):
        e = D[a : a + BLOCK] @ M.t()
        v, i = e.topk(n, dim=1)
        ups.append(idx[i].numpy())
        upv.append(v.numpy())
        v, i = (-e).topk(n, dim=1)
        downs.append(idx[i].numpy())
        downv.append((-v).numpy())
    return TokenEffects(source, np.concatenate(ups), np.concatenate(upv), np.concatenate(downs), np.concatenate(downv))
