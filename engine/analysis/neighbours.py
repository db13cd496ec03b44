"""Nearest features: by decoder direction (what they write) and by co-activation (when they fire).

Activation correlation is Pearson's r over every token of every domain (or, when tokens × k²
co-firing pairs would exceed ``MAX_PAIRS``, over a seeded sample of tokens: at k = 48 the full
product costs ~6 s of a sweep job, and neighbour ranks need far fewer tokens). The Gram matrix X^T X of
the [tokens x features] activation matrix is computed as a sparse product (each token contributes
only its k x k active pairs), never as a dense 200k x 2048 matrix; means and variances come from
its diagonal and the column sums. Row blocks keep memory bounded for large dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from engine.analysis.codes import DomainCodes

BLOCK = 2048
MAX_PAIRS = 120_000_000  # k ≤ 24 on the default 200k tokens uses every token


@dataclass
class Neighbours:
    decoder_ids: np.ndarray  # [F, n] int64, -1 padded
    decoder_scores: np.ndarray  # [F, n]
    activation_ids: np.ndarray  # [F, n]
    activation_scores: np.ndarray  # [F, n]


def _top_rows(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest n entries of each row, sorted descending (-inf entries come out as id -1)."""
    n = min(n, scores.shape[1])
    if n == 0:
        return np.zeros((scores.shape[0], 0), np.int64), np.zeros((scores.shape[0], 0))
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    vals = np.take_along_axis(scores, part, 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, 1)
    vals = np.take_along_axis(vals, order, 1)
    ids = np.where(np.isfinite(vals), ids, -1)
    return ids, vals


def decoder_neighbours(W_dec: torch.Tensor, candidates: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of decoder rows; only ``candidates`` (the live features) can be neighbours."""
    W = torch.nn.functional.normalize(W_dec.detach().float(), dim=1)
    F = W.shape[0]
    ids, vals = [], []
    mask = torch.from_numpy(~candidates)
    for a in range(0, F, BLOCK):
        b = min(a + BLOCK, F)
        s = W[a:b] @ W.t()
        s[:, mask] = -float("inf")
        s[torch.arange(b - a), torch.arange(a, b)] = -float("inf")
        i, v = _top_rows(s.numpy(), n)
        ids.append(i)
        vals.append(v)
    return np.concatenate(ids), np.concatenate(vals)


def activation_matrix(domains: list[DomainCodes], d_sae: int) -> sp.csr_matrix:
    """All domains' activations stacked: [tokens x features], CSR.

    Built straight from the codes (their entries are sorted by row): the same matrix, entry order
    included, as COO -> CSR per domain and a vstack, without those two intermediate copies."""
    if not domains:
        return sp.csr_matrix((0, d_sae), dtype=np.float32)
    counts = np.concatenate([np.bincount(dc.rows, minlength=dc.n_rows) for dc in domains])
    indptr = np.concatenate([np.zeros(1, np.int64), np.cumsum(counts)])
    data, indices = np.concatenate([dc.vals for dc in domains]), np.concatenate([dc.cols for dc in domains])
    return sp.csr_matrix((data, indices, indptr), shape=(len(counts), d_sae))


def correlation_neighbours(X: sp.csr_matrix, live: np.ndarray, n: int, max_pairs: int = MAX_PAIRS,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of activations (over all tokens, or a seeded sample, see above)."""
    pairs = float(np.square(np.diff(X.indptr).astype(np.float64)).sum())
    if pairs > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(X.shape[0], int(X.shape[0] * max_pairs / pairs), replace=False))
        X = X[keep]
    N, F = X.shape
    X = X.astype(np.float64)
    mean = np.asarray(X.sum(0)).ravel() / N
    XT = X.T.tocsr()
    gram = (XT @ X).tocsr()  # [F, F] sparse: pairs that ever co-fire
    sq = gram.diagonal() / N
    std = np.sqrt(np.maximum(sq - mean**2, 0))
    ids, vals = [], []
    for a in range(0, F, BLOCK):
        b = min(a + BLOCK, F)
        g = gram[a:b].toarray() / N
        cov = g - mean[a:b, None] * mean[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / (std[a:b, None] * std[None, :])
        r[:, ~live] = -np.inf
        r[~live[a:b]] = -np.inf
        r[np.arange(b - a), np.arange(a, b)] = -np.inf
        r[~np.isfinite(r)] = -np.inf
        i, v = _top_rows(r, n)
        ids.append(i)
        vals.append(v)
    return np.concatenate(ids), np.concatenate(vals)


def compute_neighbours(W_dec: torch.Tensor, domains: list[DomainCodes], live: np.ndarray, n: int) -> Neighbours:
    d_ids, d_vals = decoder_neighbours(W_dec, live, n)
    a_ids, a_vals = correlation_neighbours(activation_matrix(domains, W_dec.shape[0]), live, n)
    return Neighbours(d_ids, d_vals, a_ids, a_vals)
