"""Automatic feature labels, and a held-out score that says whether to trust each one.

The seed labelled a feature with the three most common words of its top contexts, which names
"the" and "," for most features. Here a label is the set of (at most 3) tokens T that best
*separate* the positions where the feature fires from those where it does not, on the training
rows of every domain:

    gain(t) = P(token = t | fires) - P(token = t | does not fire)

For the rule "fires iff the token is in T", balanced accuracy = 0.5 + 0.5 * sum of gain(t) over
T (the events are disjoint), so the tokens with the largest positive gains are the best label of
that size: distinctive tokens, weighed against their corpus frequency (a token that is frequent
everywhere gains nothing). The same is done with the *previous* token ("after: import"), for
features that respond to what came before; the kind with the higher training score is kept
(the current token unless the previous one is better by ``PREV_MARGIN``).

The score (detection, as in the automated-interpretability literature) is the balanced accuracy
of the same rule on the held-out 10% of each domain, which the label never saw: 0.5 is chance,
1 is perfect. Precision and recall are stored beside it, because balanced accuracy ignores how
rare firing is, and so is the score's 95 % interval: a label is *reliable* only when the
interval's lower end clears chance by 0.1 (``label_trust``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from engine.analysis.codes import DomainCodes
from engine.analysis.label_trust import RELIABLE_LOW, balanced_accuracy_interval
from engine.analysis.vocab import Vocab

PREV_MARGIN = 0.05
KINDS = ("token", "previous token")


@dataclass
class Labels:
    kind: np.ndarray  # object [F]: "token", "previous token" or None
    token_ids: np.ndarray  # int64 [F, m], -1 padded
    text: np.ndarray  # object [F] or None
    tokens: np.ndarray  # object [F] of lists of token strings, or None
    train_score: np.ndarray  # [F] NaN when unlabelled
    score: np.ndarray  # [F] held-out balanced accuracy over all domains pooled
    precision: np.ndarray  # [F]
    recall: np.ndarray  # [F]
    domain_score: np.ndarray  # [D, F]
    val_fires: np.ndarray  # [D, F] int64
    score_low: np.ndarray  # [F] lower end of the 95 % interval of score (label_trust), NaN when unscored
    score_high: np.ndarray  # [F]
    reliable: np.ndarray  # bool [F]: score_low >= label_trust.RELIABLE_LOW
    fire_tokens: sp.csr_matrix  # [F, V]: training-row firing counts per token (cluster summaries use it)
    corpus_tokens: np.ndarray  # [V]: training-row token counts


def _train_parts(domains: list[DomainCodes], V: int, prev: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(feature, token) of every training firing entry, and corpus token counts of training rows."""
    fs, ts, corpus, n = [], [], np.zeros(V, dtype=np.int64), 0
    for dc in domains:
        tok_at = _token_ids(dc, prev, V)
        m = dc.rows < dc.val_start
        fs.append(dc.cols[m])
        ts.append(tok_at[dc.rows[m]].astype(np.int32))  # 32-bit, like the feature ids: half the memory of the pairs
        corpus += np.bincount(tok_at[: dc.val_start], minlength=V)
        n += dc.val_start
    return np.concatenate(fs), np.concatenate(ts), corpus, n


def _token_ids(dc: DomainCodes, prev: bool, V: int) -> np.ndarray:
    """Token id at (or before) each row; "no previous token" is bucket V - 1."""
    if not prev:
        return dc.row_tokens.astype(np.int64)
    p = dc.row_prev.astype(np.int64)
    return np.where(p < 0, V - 1, p)


def _best_tokens(counts: sp.csr_matrix, corpus: np.ndarray, n_total: int, m: int, min_count: int,
                 min_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Per feature: the m tokens of largest positive gain (ids, -1 padded) and the training score.

    Beyond the first, a token joins the label only if it carries ``min_share`` of the feature's
    firing: a token seen twice by chance has a tiny positive gain, and naming it adds nothing
    a reader can use while costing false alarms on held-out text."""
    F = counts.shape[0]
    counts = counts.tocoo()
    f, t, c = counts.row.astype(np.int64), counts.col.astype(np.int64), counts.data.astype(np.float64)
    n_f = np.bincount(f, weights=c, minlength=F)
    gain = c / np.maximum(n_f[f], 1) - (corpus[t] - c) / np.maximum(n_total - n_f[f], 1)
    share = c / np.maximum(n_f[f], 1)
    ok = (c >= min_count) & (gain > 0)
    f, t, gain, share = f[ok], t[ok], gain[ok], share[ok]
    key = (f << 32) | (0x7FFFFFFF - np.ascontiguousarray(gain, dtype=np.float32).view(np.int32).astype(np.int64))
    order = np.argsort(key)
    f, t, gain, share = f[order], t[order], gain[order], share[order]
    starts = np.zeros(F + 1, dtype=np.int64)
    starts[1:] = np.cumsum(np.bincount(f, minlength=F))
    rank = np.arange(len(f)) - starts[f]
    keep = (rank < m) & ((rank == 0) | (share >= min_share))
    ids = np.full((F, m), -1, dtype=np.int64)
    ids[f[keep], rank[keep]] = t[keep]
    score = 0.5 + 0.5 * np.bincount(f[keep], weights=gain[keep], minlength=F)
    score[ids[:, 0] < 0] = np.nan
    return ids, score


def compute_labels(domains: list[DomainCodes], d_sae: int, vocab: Vocab, max_tokens: int = 3, min_count: int = 2,
                   min_share: float = 0.05, min_val_fires: int = 5) -> Labels:
    """Labels of every feature; scores are NaN where fewer than ``min_val_fires`` held-out tokens fire
    (a balanced accuracy from one or two positives says nothing)."""
    V = max(vocab.size, max(int(dc.tokens.max()) + 1 for dc in domains)) + 1  # + the "no previous token" bucket
    cand = {}
    fire_tokens = None
    corpus_tokens = None
    for kind, prev in zip(KINDS, (False, True)):
        f, t, corpus, n_total = _train_parts(domains, V, prev)
        # (feature, token) counts: COO -> CSR is a counting sort by feature, then each feature's few
        # tokens are sorted and summed (faster than np.unique's sort of all 64-bit keys).
        counts = sp.coo_matrix((np.ones(len(f), np.float32), (f, t)), shape=(d_sae, V)).tocsr()
        counts.sum_duplicates()
        if not prev:
            fire_tokens, corpus_tokens = counts, corpus
        cand[kind] = _best_tokens(counts, corpus, n_total, max_tokens, min_count, min_share)
    tok_ids, tok_score = cand["token"]
    prev_ids, prev_score = cand["previous token"]
    use_prev = np.nan_to_num(prev_score, nan=-1) > np.nan_to_num(tok_score, nan=-1) + PREV_MARGIN
    use_prev |= np.isnan(tok_score) & ~np.isnan(prev_score)
    ids = np.where(use_prev[:, None], prev_ids, tok_ids)
    train_score = np.where(use_prev, prev_score, tok_score)
    labelled = ids[:, 0] >= 0
    kind = np.where(labelled, np.where(use_prev, KINDS[1], KINDS[0]), None).astype(object)

    # Held-out detection, per domain and pooled.
    D = len(domains)
    tp, pos = np.zeros((D, d_sae)), np.zeros((D, d_sae))
    nf, nval = np.zeros((D, d_sae), dtype=np.int64), np.zeros(D)
    for i, dc in enumerate(domains):
        m = dc.rows >= dc.val_start
        r, f = dc.rows[m], dc.cols[m].astype(np.int64)
        nf[i] = np.bincount(f, minlength=d_sae)
        nval[i] = dc.n_rows - dc.val_start
        for prev in (False, True):
            tok_at = _token_ids(dc, prev, V)
            sel = use_prev[f] == prev
            t = tok_at[r[sel]]
            hit = (ids[f[sel]] == t[:, None]).any(1)
            tp[i] += np.bincount(f[sel][hit], minlength=d_sae)
            val_counts = np.bincount(tok_at[dc.val_start : dc.n_rows], minlength=V).astype(np.float64)
            predicted = np.where(ids >= 0, val_counts[np.maximum(ids, 0)], 0).sum(1)
            pos[i] += np.where(use_prev == prev, predicted, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        def ba(tp_, pos_, nf_, n_):
            tpr = tp_ / nf_
            fpr = (pos_ - tp_) / np.maximum(n_ - nf_, 1)
            return np.where((nf_ >= max(min_val_fires, 1)) & labelled, 0.5 * (tpr + 1 - fpr), np.nan)

        domain_score = ba(tp, pos, nf, nval[:, None])
        TP, P, NF, N = tp.sum(0), pos.sum(0), nf.sum(0), nval.sum()
        score = ba(TP, P, NF, N)
        scored = labelled & (NF >= max(min_val_fires, 1))
        precision = np.where(scored & (P > 0), TP / P, np.nan)
        recall = np.where(scored, TP / NF, np.nan)
        _, low, high = balanced_accuracy_interval(TP, NF, (N - NF) - (P - TP), N - NF)
        low, high = np.where(scored, low, np.nan), np.where(scored, high, np.nan)
        reliable = scored & (np.nan_to_num(low, nan=-1.0) >= RELIABLE_LOW)
    tokens = np.full(d_sae, None, dtype=object)
    text = np.full(d_sae, None, dtype=object)
    for fi in np.nonzero(labelled)[0]:  # one short string per labelled feature
        toks = [_token_text(vocab, int(t), V) for t in ids[fi] if t >= 0]
        tokens[fi] = toks
        shown = " | ".join(_shown(s) for s in toks)
        text[fi] = f"after: {shown}" if use_prev[fi] else shown
    return Labels(kind, ids, text, tokens, train_score, score, precision, recall, domain_score, nf, low, high, reliable,
                  fire_tokens, corpus_tokens)


def _token_text(vocab: Vocab, tid: int, V: int) -> str:
    return "<start>" if tid == V - 1 else vocab.text(tid)


def _shown(s: str) -> str:
    """A token as a label shows it: surrounding spaces trimmed, whitespace tokens named."""
    t = s.strip()
    return t if t else repr(s)
