"""Effect measures of an edit, each a plain function of clean and edited model outputs.

Causal LMs (logits):
* KL(p_clean ‖ p_edited) of the next-token distribution at each position; the reported mean is
  over the edited positions (the text's ordinary tokens, whose next-token predictions the edit
  can reach first-hand);
* token movers: the mean logit change over the edited positions, centred over the vocabulary
  (adding the same amount to every logit changes nothing), special and unused tokens excluded;
* ΔCE: next-token cross-entropy on a held-out slice of each domain, edited minus clean.

Encoders (final hidden states):
* cosine shift = 1 − cos(pooled clean, pooled edited), the sentence embedding being the
  attention-masked mean over tokens (sentence-transformers' pooling), and the same per token;
* nearest-neighbour ranks: corpus sentences ranked by cosine to the clean and to the edited
  embedding (overlap of the top-k, Spearman correlation of the similarities, biggest rank moves);
* token effects through the tied embeddings: the mean change of the final hidden states over the
  edited positions, projected on the (vocabulary-centred) word-embedding matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.analysis.vocab import Vocab


def kl_per_position(clean_logits: torch.Tensor, edited_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_clean ‖ p_edited) [..., L] of next-token distributions (nats; float32: a batch of
    Pythia logits is already 200 MB, and identical logits still give exactly 0)."""
    lp = F.log_softmax(clean_logits.float(), -1)
    lq = F.log_softmax(edited_logits.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1).clamp_min(0.0)


def cosine_shift(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − cos(a, b) along the last axis (in float64: shifts of 1e-9 stay visible)."""
    return (1.0 - F.cosine_similarity(a.double(), b.double(), dim=-1)).clamp_min(0.0)


def token_movers(delta: torch.Tensor, vocab: Vocab, n: int) -> dict[str, list[dict[str, Any]]]:
    """The n tokens most pushed up and down by a per-token change ``delta`` [V] (centred over the
    tokens that count; special, unused and padding ids excluded)."""
    V = delta.shape[0]
    ok = torch.ones(V, dtype=torch.bool)
    ex = torch.from_numpy(vocab.excluded[: min(V, vocab.size)])
    ok[: len(ex)] = ~ex
    ok[min(V, vocab.size):] = False
    idx = ok.nonzero().squeeze(1)
    d = delta.double().cpu()[idx]
    d = d - d.mean()
    n = min(n, len(idx))
    out: dict[str, list[dict[str, Any]]] = {"up": [], "down": []}
    if n == 0 or not bool((d != 0).any()):  # nothing moved: no ranking to report
        return out
    for direction, sign in (("up", 1.0), ("down", -1.0)):
        v, i = (sign * d).topk(n)
        for rank, (vv, ii) in enumerate(zip(v.tolist(), i.tolist())):
            tid = int(idx[ii])
            out[direction].append({"rank": rank, "token_id": tid, "token": vocab.text(tid), "delta": sign * vv})
    return out


def logit_delta(clean_logits: torch.Tensor, edited_logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean logit change [V] over the edited positions (all positions when none is edited)."""
    d = (edited_logits - clean_logits).double()
    sel = d[keep] if bool(keep.any()) else d.reshape(-1, d.shape[-1])
    return sel.mean(0)


def embedding_delta(clean_h: torch.Tensor, edited_h: torch.Tensor, keep: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """The mean hidden-state change over the edited positions, read through the embedding matrix E [V, d]."""
    d = (edited_h - clean_h).double()
    dh = (d[keep] if bool(keep.any()) else d.reshape(-1, d.shape[-1])).mean(0)
    return E.double() @ dh


def neighbour_ranks(clean: torch.Tensor, edited: torch.Tensor, corpus: torch.Tensor, meta: list[dict[str, Any]],
                    top: int, moves: int) -> dict[str, Any]:
    """How the corpus sentences nearest to the text change when its embedding is edited.

    ``corpus`` is [N, d], unit rows. Ranks are 0-based (0 = nearest)."""
    # deferred: scipy is heavy
    from scipy.stats import spearmanr

    if corpus.shape[0] == 0:
        return {"n_corpus": 0, "top_k": 0, "overlap": None, "spearman": None, "rows": []}
    sc = (corpus.double() @ F.normalize(clean.double(), dim=-1)).cpu().numpy()
    se = (corpus.double() @ F.normalize(edited.double(), dim=-1)).cpu().numpy()
    order_c = np.argsort(-sc, kind="stable")
    order_e = np.argsort(-se, kind="stable")
    rank_c = np.empty(len(sc), np.int64)
    rank_c[order_c] = np.arange(len(sc))
    rank_e = np.empty(len(se), np.int64)
    rank_e[order_e] = np.arange(len(se))
    k = min(top, len(sc))
    overlap = len(set(order_c[:k].tolist()) & set(order_e[:k].tolist())) / k if k else None
    if np.allclose(sc, se, rtol=0, atol=0):
        rho = 1.0
    else:
        rho = float(spearmanr(sc, se).statistic) if len(sc) > 1 else None
    rows: list[dict[str, Any]] = []

    def row(kind: str, r: int, i: int) -> dict[str, Any]:
        return {"kind": kind, "rank": r, **meta[i], "rank_clean": int(rank_c[i]), "rank_edited": int(rank_e[i]),
                "sim_clean": float(sc[i]), "sim_edited": float(se[i])}

    rows += [row("clean_top", r, int(i)) for r, i in enumerate(order_c[:k])]
    rows += [row("edited_top", r, int(i)) for r, i in enumerate(order_e[:k])]
    move = rank_c - rank_e  # > 0: moved closer
    for kind, order in (("moved_closer", np.argsort(-move, kind="stable")), ("moved_away", np.argsort(move, kind="stable"))):
        picked = [int(i) for i in order[:moves] if (move[i] > 0 if kind == "moved_closer" else move[i] < 0)]
        rows += [row(kind, r, i) for r, i in enumerate(picked)]
    return {"n_corpus": int(len(sc)), "top_k": k, "overlap": overlap, "spearman": rho, "rows": rows}
