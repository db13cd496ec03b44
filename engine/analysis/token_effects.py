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
from engine.device import cpu_has_fast_bf16

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
def compute_token_effects(W_dec: torch.Tensor, matrix: torch.Tensor | None, source: str, vocab: Vocab, n: int,
                          bf16: bool | None = None) -> TokenEffects:
    """The n tokens each decoder direction raises most and lowers most.

    Where bf16 is fast (``bf16`` None: a GPU or a CPU with native bf16) the [F, V] product is done in
    bf16 and only picks candidates, the n + m largest and smallest per feature; their effects are
    recomputed in fp32 and a feature keeps the result only when it is provably fp32's choice (the same
    bound as ``engine.evaluation.codes``; the others are redone in fp32), so ids and values are fp32's."""
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
    fast = (torch.cuda.is_available() and M.is_cuda) or cpu_has_fast_bf16() if bf16 is None else bf16
    pick = _Bf16TopK(M, n) if fast and 4 * n <= len(idx) else None
    ups, upv, downs, downv = [], [], [], []
    for a in range(0, F, BLOCK):
        d = D[a : a + BLOCK]
        if pick is not None:
            (v, i), (dv, di) = pick(d)
        else:
            e = d @ M.t()
            v, i = e.topk(n, dim=1)
            dv, di = e.topk(n, dim=1, largest=False)
        ups.append(idx[i].numpy())
        upv.append(v.numpy())
        downs.append(idx[di].numpy())
        downv.append(dv.numpy())
    return TokenEffects(source, np.concatenate(ups), np.concatenate(upv), np.concatenate(downs), np.concatenate(downv))


class _Bf16TopK:
    """Top and bottom n of d @ M^T per row: bf16 product for candidates, fp32 for their values."""

    U = 2.0**-8

    def __init__(self, M: torch.Tensor, n: int):
        self.M, self.n, self.m = M.contiguous(), n, max(8, n)
        self.M16 = M.to(torch.bfloat16)
        self.m_norm = self.dm_norm = self.m16_norm = 0.0
        for a in range(0, len(M), 4096):  # in row blocks: fp64 copies of the whole [V, d] matrix were ~400 MB
            m64, m16 = M[a : a + 4096].double(), self.M16[a : a + 4096].double()
            self.m_norm = max(self.m_norm, float(m64.norm(dim=1).max()))
            self.dm_norm = max(self.dm_norm, float((m64 - m16).norm(dim=1).max()))
            self.m16_norm = max(self.m16_norm, float(m16.norm(dim=1).max()))
        self.fallback_rows = 0

    def __call__(self, d: torch.Tensor):
        d16 = d.to(torch.bfloat16)
        e16 = d16 @ self.M16.t()
        dd = d.double()
        err = ((dd - d16.double()).norm(dim=1) * self.m_norm
               + d16.double().norm(dim=1) * (self.dm_norm + (d.shape[1] * 2.0**-24 * 1.01) * self.m16_norm) + 1e-6)
        out = []
        for largest in (True, False):
            cv, cand = e16.topk(self.n + self.m, dim=1, largest=largest, sorted=False)
            exact = torch.einsum("fd,fcd->fc", d, self.M[cand])
            v, j = exact.topk(self.n, dim=1, largest=largest)
            ids = cand.gather(1, j)
            rest = (cv.amin(1) if largest else cv.amax(1)).double()  # every token left out is on the far side of this
            bound = err + 1.01 * self.U * rest.abs()
            bad = ((v[:, -1].double() <= rest + bound) if largest else (v[:, -1].double() >= rest - bound)).nonzero().squeeze(1)
            if len(bad):
                self.fallback_rows += len(bad)
                e = d[bad] @ self.M.t()
                v[bad], ids[bad] = e.topk(self.n, dim=1, largest=largest)
            out.append((v, ids))
        return out
