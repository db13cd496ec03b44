"""How well a run's latents recover each ground-truth concept, on held-out tokens.

For every concept with at least ``MIN_POSITIVES`` held-out positive tokens (fewer make every
number below noise), on the domains the concept applies to:

* **Best single latent.** Chosen on the *training* split (so the held-out numbers are not the
  maximum of 2048 noisy draws): the latent with the largest AUROC (activation as the score, a
  latent that does not fire scores 0), and its threshold maximising F1 on the training rows.
  Reported on held-out rows: AUROC, and precision / recall / F1 of "activation >= threshold".
  The training AUROCs of all latents come from one rank pass over the training codes: per
  latent, the Mann-Whitney U of the positives is a sparse product of the membership matrix
  with the activation *ranks* (non-firing rows tie at the bottom), so every (concept, latent)
  pair costs a multiply-add, not a sort.
* **k-sparse probing** (SAEBench's method): on the training split rank latents by
  |mean activation on positives - mean on negatives|, fit a logistic regression (L2, C = 1,
  class-balanced) on the top k, report held-out balanced accuracy for k = 1, 2, 5. The
  baseline is the same probe on the model's own activation dimensions (the SAE's input),
  ranked the same way: a dictionary is worth its keep when its k latents beat k raw dims.
  SAEBench balances the classes by subsampling; here the probe trains on up to
  ``MAX_TRAIN_POS`` positives and ``NEG_PER_POS`` times as many negatives (fixed seed), with
  class weights, and is scored by balanced accuracy on every held-out token.
* **Latents to 90 % recall** (a feature-splitting / absorption proxy): probes on the top
  1, 2, 5, 10, 20 and 64 latents of that ranking; the smallest k whose held-out recall reaches
  90 % of the 64-latent probe's. A concept one latent carries needs 1; a concept split over
  many latents (or absorbed into token-specific ones) needs more.
* **Baseline best dim**: among the 8 model dims of largest mean difference (either sign), the
  one of best training AUROC, thresholded for F1 the same way; concept coverage of the model
  itself, to read the SAE's coverage against.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits

from engine.analysis.codes import DomainCodes
from engine.analysis.concepts.members import Memberships
from engine.analysis.concepts.registry import Concept

MIN_POSITIVES = 20  # held-out positive tokens a concept needs to be evaluated
COVERAGE_F1 = 0.8  # a concept is covered when a latent reaches this held-out F1
PROBE_KS = (1, 2, 5)
LADDER = (1, 2, 5, 10, 20, 64)
RECALL_SHARE = 0.9
MAX_TRAIN_POS = 1000
NEG_PER_POS = 3
MIN_TRAIN_NEG = 1000
BASELINE_DIMS = 8
CHUNK = 16384


@dataclass
class DomainInput:
    name: str
    kind: str  # code | prose
    codes: DomainCodes
    members: Memberships | None  # None: the domain's text could not be rebuilt
    acts: Any  # [n_rows, d_model] array (memory-mapped): the SAE's input, for the baseline


@dataclass
class ConceptResult:
    concept: str
    kind: str
    origin: str
    description: str
    domains: list[str]
    status: str  # evaluated | too few held-out positives | no text | no domain of its kind
    n_train_pos: int = 0
    n_val_pos: int = 0
    n_val: int = 0
    best_latent: int | None = None
    threshold: float | None = None
    train_auroc: float | None = None
    auroc: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    top_latents: list[int] = field(default_factory=list)
    probe: dict[int, float] = field(default_factory=dict)  # k -> held-out balanced accuracy
    baseline: dict[int, float] = field(default_factory=dict)
    baseline_dim: int | None = None
    baseline_f1: float | None = None
    full_probe_recall: float | None = None
    latents_to_90: int | None = None


# -- metrics, written out so a reader can check them against sklearn ----------------------------
def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve with ties counted half (equals sklearn's roc_auc_score)."""
    labels = labels.astype(bool)
    P = int(labels.sum())
    N = len(labels) - P
    if P == 0 or N == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[labels].sum() - P * (P + 1) / 2) / (P * N))


def prf(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    tp = float((pred & labels).sum())
    fp = float((pred & ~labels).sum())
    fn = float((~pred & labels).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * tp / (2 * tp + fp + fn) if tp else 0.0)


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray, neg_weight: float = 1.0, floor: float = 0.0) -> float:
    """The threshold t (a score value) maximising F1 of ``scores >= t``; negatives weigh ``neg_weight``
    (for a sample with subsampled negatives). Only scores above ``floor`` are candidates (a latent
    that does not fire never counts as predicting the concept)."""
    labels = labels.astype(bool)
    P = labels.sum()
    cand = np.flatnonzero(scores > floor)  # only these can be thresholds: sort them alone (most rows do not fire)
    order = cand[np.argsort(-scores[cand], kind="stable")]
    s, y = scores[order], labels[order]
    if not len(s):
        return float("inf")
    tp = np.cumsum(y)
    fp = np.cumsum(~y) * neg_weight
    last = np.r_[s[1:] != s[:-1], True]  # the last row of each tie group: a threshold includes all ties
    f1 = np.where(last, 2 * tp / np.maximum(2 * tp + fp + (P - tp), 1e-12), -1)
    return float(s[int(np.argmax(f1))])


def balanced_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    labels = labels.astype(bool)
    return float(0.5 * ((pred & labels).sum() / max(labels.sum(), 1) + (~pred & ~labels).sum() / max((~labels).sum(), 1)))


# -- the data of one group of domains --------------------------------------------------------------
def _csr(dc: DomainCodes, d_sae: int, lo: int, hi: int) -> sp.csr_matrix:
    a, b = np.searchsorted(dc.rows, [lo, hi])
    indptr = np.searchsorted(dc.rows[a:b], np.arange(lo, hi + 1)).astype(np.int64)
    return sp.csr_matrix((dc.vals[a:b], dc.cols[a:b], indptr), shape=(hi - lo, d_sae))


@dataclass
class _Split:
    codes: sp.csr_matrix | None  # [n, F]; the training split lets go of it once its rows with text are taken
    member: np.ndarray  # bool [n, C]
    known: np.ndarray  # bool [n, C]
    domain_rows: list[tuple[int, int, int]]  # (domain index, first row in the domain, n rows)

    def acts(self, inputs: list[DomainInput], idx: np.ndarray) -> np.ndarray:
        """Model activations (float32) of rows ``idx`` (ascending) of this split."""
        out = np.empty((len(idx), inputs[self.domain_rows[0][0]].acts.shape[1]), dtype=np.float32)
        base = 0
        for d, first, n in self.domain_rows:
            sel = (idx >= base) & (idx < base + n)
            if sel.any():
                out[sel] = np.asarray(inputs[d].acts[idx[sel] - base + first], dtype=np.float32)
            base += n
        return out


def _split(inputs: list[DomainInput], dom: list[int], d_sae: int, val: bool) -> _Split:
    parts, mem, kn, rows = [], [], [], []
    for d in dom:
        dc, m = inputs[d].codes, inputs[d].members
        lo, hi = (dc.val_start, dc.n_rows) if val else (0, dc.val_start)
        parts.append(_csr(dc, d_sae, lo, hi))
        mem.append(m.member[lo:hi])
        kn.append(m.known[lo:hi])
        rows.append((d, lo, hi - lo))
    return _Split(sp.vstack(parts, format="csr"), np.concatenate(mem), np.concatenate(kn), rows)


def _column_ranks(C: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per latent (column), the average rank (1-based, ascending) of each firing row among all rows,
    non-firing rows tied at the bottom, in the order of ``C.data`` (indices sorted); and each latent's
    rank of a non-firing row."""
    n, F = C.shape
    nnz = np.diff(C.indptr)
    col = np.repeat(np.arange(F, dtype=np.int64), nnz)
    key = (col << 32) | np.ascontiguousarray(C.data, dtype=np.float32).view(np.int32).astype(np.int64)
    # Equal keys (same latent, same value) share one average rank whatever their order, so the sort
    # need not be stable: numpy's quicksort of 64-bit ints is its SIMD one, several times a stable sort.
    order = np.argsort(key)
    k_sorted = key[order]
    del key
    col = col[order]
    pos = np.arange(len(order)) - C.indptr[col]  # 0-based position within the latent's firing rows
    new = np.r_[True, k_sorted[1:] != k_sorted[:-1]]
    del k_sorted
    run = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    del new
    last = np.r_[first[1:], len(order)] - 1
    avg_pos = (pos[first] + pos[last])[run] / 2.0
    del pos, run, first, last
    ranks = np.empty(len(order))
    ranks[order] = (n - nnz[col]) + avg_pos + 1
    zero_rank = (n - nnz + 1) / 2.0
    return ranks, zero_rank


RANK_BLOCK = 256  # latents per pass of the rank computation


def _latent_sums(C: sp.csc_matrix, M: sp.csr_matrix,
                 block: int = RANK_BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (concept, latent), over the concept's positive rows (``M``, [n, C]): the sum of the
    latent's ranks (``_column_ranks``) where it fires, how many of them it fires on, and the sum of
    its activations; and each latent's rank of a non-firing row.

    In blocks of ``block`` latents, so the rank pass's temporaries (a few 64-bit arrays per active
    entry) stay one block's size: at k = 48 on the default 200k tokens the whole matrix at once held
    ~1.1 GB for a moment, a worker's peak. Every sum runs over the rows in the same order either way
    (and ranks are half-integers, summed exactly), so the numbers do not depend on ``block``."""
    n, F = C.shape
    MT = M.T.tocsr()
    shape = (MT.shape[0], F)
    rank_pos, fire_pos, act_pos = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    zero_rank = np.empty(F)
    for a in range(0, F, block):
        blk = C[:, a : min(a + block, F)]
        blk.sort_indices()
        ranks, zero_rank[a : a + blk.shape[1]] = _column_ranks(blk)
        cols = slice(a, a + blk.shape[1])
        rank_pos[:, cols] = (MT @ sp.csc_matrix((ranks, blk.indices, blk.indptr), shape=blk.shape)).toarray()
        fire_pos[:, cols] = (MT @ sp.csc_matrix((np.ones(len(ranks)), blk.indices, blk.indptr), shape=blk.shape)).toarray()
        act_pos[:, cols] = (MT @ blk).toarray()
    return rank_pos, fire_pos, act_pos, zero_rank


def fit_logistic(X: np.ndarray, y: np.ndarray, C: float = 1.0, max_iter: int = 100, tol: float = 1e-8) -> np.ndarray:
    """Coefficients (weights, then intercept) of sklearn's ``LogisticRegression(C=C, class_weight="balanced")``.

    The same convex objective -- C * sum_i s_i * logloss_i + ||w||^2 / 2, s_i = n / (2 n_class(y_i)),
    intercept unpenalised -- solved by Newton's method with a backtracking line search. For the
    lab's probes (at most 64 inputs, a few thousand rows) a Newton step is one small Gram matrix,
    so hundreds of probes take a second where sklearn's general solver spends most of its time in
    per-call overhead (a test checks the coefficients against sklearn's)."""
    n, k = X.shape
    y = y.astype(bool)
    n_pos = int(y.sum())
    s = np.where(y, n / (2.0 * max(n_pos, 1)), n / (2.0 * max(n - n_pos, 1)))
    Z = np.hstack([X.astype(np.float64), np.ones((n, 1))])
    Z32 = Z.astype(np.float32)  # the Hessian in single precision (half the time); the gradient stays exact,
    # so Newton still converges to the same optimum
    reg = np.full(k + 1, 1.0 / C)
    reg[-1] = 0.0
    t = y.astype(np.float64)

    def objective(beta: np.ndarray) -> float:
        z = Z @ beta
        return float(np.sum(s * (np.logaddexp(0.0, z) - t * z)) + 0.5 * np.sum(reg * beta * beta))

    beta = np.zeros(k + 1)
    f = objective(beta)
    for _ in range(max_iter):
        z = Z @ beta
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function without overflow
        g = Z.T @ (s * (p - t)) + reg * beta
        H = ((Z32 * (s * p * (1.0 - p)).astype(np.float32)[:, None]).T @ Z32).astype(np.float64) + np.diag(reg + 1e-12)
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(H, g, rcond=None)[0]
        lr = 1.0
        while True:
            cand = beta - lr * step
            fc = objective(cand)
            if fc <= f - 1e-4 * lr * float(g @ step) or lr < 1e-8:
                break
            lr *= 0.5
        beta, f_old, f = cand, f, fc
        if np.max(np.abs(lr * step)) < tol or abs(f_old - f) <= tol * max(1.0, abs(f)):
            break
    return beta


def _fit_probe(Xtr: np.ndarray, ytr: np.ndarray, Xva: np.ndarray) -> np.ndarray:
    """Held-out predictions of a class-balanced L2 logistic probe (C = 1) on standardised inputs."""
    if Xtr.shape[1] == 0 or ytr.all() or not ytr.any():
        return np.zeros(len(Xva), dtype=bool)
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd[sd == 0] = 1.0  # standardised inputs: the same C means the same thing for latents and model dims
    beta = fit_logistic((Xtr - mu) / sd, ytr)
    return ((Xva - mu) / sd) @ beta[:-1] + beta[-1] > 0


def _dense_cols(A: sp.csc_matrix, rows: np.ndarray | None, cols: np.ndarray) -> np.ndarray:
    sub = A[:, cols]
    if rows is not None:
        sub = sub.tocsr()[rows]
    return np.asarray(sub.todense(), dtype=np.float32)


def _act_mean_diff(inputs: list[DomainInput], split: _Split, member: np.ndarray, known: np.ndarray) -> np.ndarray:
    """[C, d_model]: mean model activation of known positives minus known negatives (training split).

    One streamed pass: the sum over all rows, and sparse products for the positives and for the
    few rows where a concept is undecided (so the dense [C, n] x [n, d] product is never formed)."""
    d_model = inputs[split.domain_rows[0][0]].acts.shape[1]
    pos_sum = np.zeros((member.shape[1], d_model))
    unk_sum = np.zeros_like(pos_sum)
    total = np.zeros(d_model)
    base = 0
    for d, first, n in split.domain_rows:
        acts = inputs[d].acts
        for a in range(0, n, CHUNK):
            b = min(a + CHUNK, n)
            x = np.asarray(acts[first + a : first + b], dtype=np.float32)
            total += x.sum(0, dtype=np.float64)
            pos_sum += sp.csr_matrix(member[base + a : base + b].T.astype(np.float32)) @ x
            unk = ~known[base + a : base + b]
            if unk.any():
                unk_sum += sp.csr_matrix(unk.T.astype(np.float32)) @ x
        base += n
    P = member.sum(0)[:, None]
    N = (known & ~member).sum(0)[:, None]
    return pos_sum / np.maximum(P, 1) - (total[None, :] - pos_sum - unk_sum) / np.maximum(N, 1)


class BaselineCache:
    """The model-dims baseline of every concept, kept per process for the runs that share its inputs.

    The baseline reads only the model's activations, the memberships and the seeded choice of probe
    rows (whose draws do not depend on the SAE), so every run on the same activation sets, site and
    seed gets the very same numbers: a sweep's six runs of a layer compute them once (about a third
    of the concept evaluation). Keyed by the caller's ``baseline_key`` (activation sets, site,
    memberships), the seed and the concepts; a few entries, since each is a few numbers per concept."""

    def __init__(self, max_entries: int = 32):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, dict[str, tuple[dict[int, float], int | None, float | None]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> dict[str, tuple[dict[int, float], int | None, float | None]] | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: tuple, value: dict[str, tuple[dict[int, float], int | None, float | None]]) -> None:
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


BASELINES = BaselineCache()


def evaluate_concepts(inputs: list[DomainInput], concepts: list[Concept], d_sae: int, seed: int = 0,
                      timings: dict[str, float] | None = None, baseline_key: str | None = None,
                      cache: BaselineCache = BASELINES) -> list[ConceptResult]:
    """One result per concept (in registry order), evaluated on the domains of its kind.

    ``baseline_key`` names the activations and memberships (``engine.analysis.concepts.run``): with
    it, the model-dims baseline is read from ``cache`` when a run on the same inputs computed it."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    names = [c.name for c in concepts]
    results: dict[str, ConceptResult] = {}
    groups: dict[tuple[int, ...], list[int]] = {}
    for ci, c in enumerate(concepts):
        dom = [i for i, x in enumerate(inputs) if c.kind in ("any", x.kind)]
        have = [i for i in dom if inputs[i].members is not None]
        res = ConceptResult(c.name, c.kind, c.origin, c.description, [inputs[i].name for i in have],
                            "no text" if dom else "no domain of its kind")
        results[c.name] = res
        if have:
            groups.setdefault(tuple(have), []).append(ci)
    key = (baseline_key, seed, tuple(names), tuple((x.name, x.kind, x.members is not None) for x in inputs),
           MIN_POSITIVES, MAX_TRAIN_POS, NEG_PER_POS, MIN_TRAIN_NEG, BASELINE_DIMS, PROBE_KS) if baseline_key else None
    known = cache.get(key) if key else None
    # One BLAS thread: these are hundreds of small products, and a multi-threaded BLAS on a busy
    # machine spends 30x longer handing them between threads than computing them (measured).
    with threadpool_limits(limits=1, user_api="blas"):
        for dom, cis in groups.items():
            _evaluate_group(inputs, list(dom), cis, names, results, d_sae, rng, known)
    if key and known is None:
        cache.put(key, {r.concept: (dict(r.baseline), r.baseline_dim, r.baseline_f1) for r in results.values()})
    if timings is not None:
        timings["concepts_eval"] = round(time.perf_counter() - t0, 3)
        timings["concepts_baseline_reused"] = float(known is not None)
    return [results[n] for n in names]


def _evaluate_group(inputs: list[DomainInput], dom: list[int], cis: list[int], names: list[str],
                    results: dict[str, ConceptResult], d_sae: int, rng: np.random.Generator,
                    known_baseline: dict[str, tuple[dict[int, float], int | None, float | None]] | None = None) -> None:
    col = {n: i for i, n in enumerate(inputs[dom[0]].members.names)}
    idx = np.array([col[names[ci]] for ci in cis])
    tr = _split(inputs, dom, d_sae, val=False)
    va = _split(inputs, dom, d_sae, val=True)
    tr_member, tr_known = tr.member[:, idx], tr.known[:, idx]
    va_member, va_known = va.member[:, idx], va.known[:, idx]
    n_val_pos = va_member.sum(0)
    todo = [j for j in range(len(cis)) if n_val_pos[j] >= MIN_POSITIVES and tr_member[:, j].sum() > 0]
    for j, ci in enumerate(cis):
        r = results[names[ci]]
        r.n_val_pos, r.n_val, r.n_train_pos = int(n_val_pos[j]), int(va_known[:, j].sum()), int(tr_member[:, j].sum())
        r.status = "evaluated" if j in todo else "too few held-out positives"
    if not todo:
        return
    todo_a = np.array(todo)
    # Training AUROC of every latent for every concept, on rows with text for these concepts.
    text = tr_known[:, todo_a].any(1)
    A = tr.codes[text]
    tr.codes = None  # only the rows with text are read from here on
    tot = np.asarray(A.sum(0)).ravel()
    Acsc = A.tocsc()
    del A
    M = sp.csr_matrix(tr_member[text][:, todo_a].astype(np.float64))
    P = np.asarray(M.sum(0)).ravel()
    n = Acsc.shape[0]
    Nn = n - P
    rank_pos, fire_pos, act_pos, zero_rank = _latent_sums(Acsc, M)
    U = rank_pos + (P[:, None] - fire_pos) * zero_rank[None, :] - (P * (P + 1) / 2)[:, None]
    train_auc = U / np.maximum(P * Nn, 1)[:, None]
    # Mean activation differences (latents from the same sparse products, model dims streamed).
    pos_mean = act_pos / np.maximum(P, 1)[:, None]
    neg_mean = (tot[None, :] - pos_mean * P[:, None]) / np.maximum(Nn, 1)[:, None]
    lat_diff = np.abs(pos_mean - neg_mean)
    dim_diff = None if known_baseline else _act_mean_diff(inputs, tr, tr_member[:, todo_a], tr_known[:, todo_a])
    Vcsc = va.codes.tocsc()
    text_rows = np.flatnonzero(text)
    va_acts = None
    for t, j in enumerate(todo):
        r = results[names[cis[j]]]
        y_tr_all = tr_member[:, j]
        known_tr = tr_known[:, j]
        # Best single latent (training), reported on held-out rows.
        f = int(np.argmax(train_auc[t]))
        r.best_latent, r.train_auroc = f, float(train_auc[t, f])
        sub = known_tr[text_rows]
        x_tr = _dense_cols(Acsc, None, np.array([f]))[:, 0][sub]
        r.threshold = best_f1_threshold(x_tr, y_tr_all[text_rows][sub])
        vk = va_known[:, j]
        y_va = va_member[vk, j]
        x_va = _dense_cols(Vcsc, np.flatnonzero(vk), np.array([f]))[:, 0]
        r.auroc = auroc(x_va, y_va)
        r.precision, r.recall, r.f1 = prf(x_va >= r.threshold, y_va)
        # Probe training rows: positives and a fixed-seed sample of negatives, known rows only.
        pos = np.flatnonzero(y_tr_all)
        neg = np.flatnonzero(known_tr & ~y_tr_all)
        if len(pos) > MAX_TRAIN_POS:
            pos = rng.choice(pos, MAX_TRAIN_POS, replace=False)
        n_neg = min(len(neg), max(NEG_PER_POS * len(pos), MIN_TRAIN_NEG))
        neg = rng.choice(neg, n_neg, replace=False) if n_neg < len(neg) else neg
        rows = np.sort(np.concatenate([pos, neg]))
        y_fit = y_tr_all[rows]
        # Latent ranking by |mean difference| and the SAE probes, k = 1 .. 64.
        order = np.argsort(-lat_diff[t], kind="stable")[: max(LADDER)]
        r.top_latents = order[:5].astype(int).tolist()
        X_fit = _dense_cols(Acsc, np.searchsorted(text_rows, rows), order)  # known rows all have text
        X_va = _dense_cols(Vcsc, np.flatnonzero(vk), order)
        def recall(pred: np.ndarray) -> float:
            return float((pred & y_va).sum() / max(y_va.sum(), 1))

        full = recall(_fit_probe(X_fit, y_fit, X_va))
        r.full_probe_recall = full
        for k in LADDER[:-1]:  # the ladder stops at the first k that reaches 90 % of the full recall
            if k not in PROBE_KS and r.latents_to_90 is not None:
                break
            pred = _fit_probe(X_fit[:, :k], y_fit, X_va[:, :k])
            if k in PROBE_KS:
                r.probe[k] = balanced_accuracy(pred, y_va)
            if r.latents_to_90 is None and full > 0 and recall(pred) >= RECALL_SHARE * full:
                r.latents_to_90 = k
        if r.latents_to_90 is None and full > 0:
            r.latents_to_90 = LADDER[-1]
        # Baseline: the same probes on the model's own dimensions (or a run on the same inputs' numbers).
        if known_baseline:
            probes, r.baseline_dim, r.baseline_f1 = known_baseline[r.concept]
            r.baseline = dict(probes)
            continue
        dims = np.argsort(-np.abs(dim_diff[t]), kind="stable")[: max(max(PROBE_KS), BASELINE_DIMS)]
        if va_acts is None:
            va_acts = va.acts(inputs, np.arange(va.codes.shape[0]))
        Xd_fit = tr.acts(inputs, rows)[:, dims]
        Xd_va = va_acts[vk][:, dims]
        for k in PROBE_KS:
            r.baseline[k] = balanced_accuracy(_fit_probe(Xd_fit[:, :k], y_fit, Xd_va[:, :k]), y_va)
        # Baseline best single dim: the best training AUROC among the top dims, signed by the difference.
        sign = np.sign(dim_diff[t, dims[:BASELINE_DIMS]])
        sign[sign == 0] = 1
        scores = Xd_fit[:, :BASELINE_DIMS] * sign
        aucs = [auroc(scores[:, i], y_fit) for i in range(scores.shape[1])]
        b = int(np.nanargmax(aucs)) if np.isfinite(aucs).any() else 0
        w = (known_tr & ~y_tr_all).sum() / max(len(neg), 1)  # negatives were subsampled: reweigh them for F1
        thr = best_f1_threshold(scores[:, b], y_fit, neg_weight=w, floor=-np.inf)
        r.baseline_dim = int(dims[b])
        r.baseline_f1 = prf(Xd_va[:, b] * sign[b] >= thr, y_va)[2]


def coverage(results: list[ConceptResult]) -> dict[str, float | int | None]:
    """The run's summary: share of evaluated concepts with a latent at F1 >= COVERAGE_F1, mean k=1 probe
    accuracy, and the model-dims baseline of both."""
    ev = [r for r in results if r.status == "evaluated"]
    if not ev:
        return {"n_concepts": 0, "coverage": None, "coverage_baseline": None, "probe_k1": None, "probe_k1_baseline": None}
    return {
        "n_concepts": len(ev),
        "coverage": float(np.mean([(r.f1 or 0) >= COVERAGE_F1 for r in ev])),
        "coverage_baseline": float(np.mean([(r.baseline_f1 or 0) >= COVERAGE_F1 for r in ev])),
        "probe_k1": float(np.mean([r.probe[1] for r in ev])),
        "probe_k1_baseline": float(np.mean([r.baseline[1] for r in ev])),
    }
