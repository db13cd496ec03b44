"""Example contexts for every live feature and domain, as sae_vis shows them.

Two groups per (feature, domain): the ``top`` activating tokens, and ``quantile`` samples -- the
range (0, max] split into equal-width intervals with a few tokens drawn at random from each
(sae_vis's "quantile groups": they show what the feature does at low and middle activations too,
which top examples hide). Each context is a +-window of tokens with the feature's activation on
every one of them, for highlighting.

Selection is two sorts of the sparse entries by composite integer keys (feature, then value or
interval and a random draw), so every live feature gets its contexts at the cost of sorting a few
million integers -- the seed repository showed only its top 50 features.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.analysis.codes import DomainCodes, stable_group_order
from engine.analysis.config import AnalysisConfig
from engine.analysis.vocab import Vocab

KIND_TOP, KIND_QUANTILE = 0, 1


def _float_key(vals: np.ndarray) -> np.ndarray:
    """Non-negative float32 -> int64 with the same order (IEEE bits of positives are monotonic)."""
    return np.ascontiguousarray(vals, dtype=np.float32).view(np.int32).astype(np.int64)


def _rank_in_groups(sorted_groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Position of each element within its run of equal group ids (input sorted by group)."""
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    starts[1:] = np.cumsum(np.bincount(sorted_groups, minlength=n_groups))
    return np.arange(len(sorted_groups), dtype=np.int64) - starts[sorted_groups]


def select_contexts(dc: DomainCodes, d_sae: int, max_act: np.ndarray, cfg: AnalysisConfig,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Which entries become contexts: top-N per feature, and quantile-interval samples.

    ``max_act`` is the feature's maximum on this domain (the intervals' upper bound)."""
    cols = dc.cols.astype(np.int64)
    dtypes = {"entry": np.int64, "kind": np.int8, "rank": np.int64, "quantile": np.int16, "q_lower": np.float32,
              "q_upper": np.float32}
    out: dict[str, list[np.ndarray]] = {k: [np.zeros(0, t)] for k, t in dtypes.items()}
    if cfg.top_contexts > 0:
        key = (cols << 32) | (0x7FFFFFFF - _float_key(dc.vals))  # feature asc, activation desc
        order = np.argsort(key)
        del key  # (each of these temporaries is 8 bytes an entry: ~40 MB a domain at k = 48)
        rank = _rank_in_groups(cols[order], d_sae)
        keep = rank < cfg.top_contexts
        sel = order[keep]
        out["entry"].append(sel)
        out["kind"].append(np.full(len(sel), KIND_TOP, np.int8))
        out["rank"].append(rank[keep])
        out["quantile"].append(np.full(len(sel), -1, np.int16))
        out["q_lower"].append(np.full(len(sel), np.nan, np.float32))
        out["q_upper"].append(np.full(len(sel), np.nan, np.float32))
        del order, rank, keep
    nq, gs = cfg.n_quantiles, cfg.quantile_group_size
    if nq > 0 and gs > 0:
        m = max_act[cols].astype(np.float64)
        q = np.clip(np.ceil(dc.vals / np.maximum(m, 1e-30) * nq).astype(np.int64) - 1, 0, nq - 1)  # (lower, upper]
        del m
        group = cols * nq + q
        shuffled = rng.permutation(len(group))  # a random draw inside each interval: shuffle, then stable group sort
        order = shuffled[stable_group_order(group[shuffled], d_sae * nq)]
        del shuffled
        rank = _rank_in_groups(group[order], d_sae * nq)
        del group
        keep = rank < gs
        sel = order[keep]
        qs = q[sel]
        sel_m = max_act[cols[sel]].astype(np.float64)
        out["entry"].append(sel)
        out["kind"].append(np.full(len(sel), KIND_QUANTILE, np.int8))
        out["rank"].append(qs * gs + rank[keep])
        out["quantile"].append(qs.astype(np.int16))
        out["q_lower"].append((qs * sel_m / nq).astype(np.float32))
        out["q_upper"].append(((qs + 1) * sel_m / nq).astype(np.float32))
    return {k: np.concatenate(v) for k, v in out.items()}


def windows(dc: DomainCodes, rows: np.ndarray, features: np.ndarray,
            w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(activations [n, 2w+1], valid [n, 2w+1], window start, centre index) of +-w windows.

    Windows are clipped to the sequence, not padded; special tokens inside it get activation 0
    (they have no activation row). The window's tokens are a slice of ``token_sequences``.
    A window's rows are one contiguous range (rows run in (sequence, position) order), so the
    feature's entries in it are found with two binary searches per window rather than one per
    token -- the feature fires on one or two of its 21 tokens."""
    n = len(rows)
    seq = dc.row_seq[rows].astype(np.int64)
    pos = dc.row_pos[rows].astype(np.int64)
    seq_len = dc.tokens.shape[1]
    grid = pos[:, None] + np.arange(-w, w + 1)[None, :]
    valid = (grid >= 0) & (grid < seq_len)
    wrows = np.where(valid, dc.row_of[seq[:, None], np.clip(grid, 0, seq_len - 1)], -1)
    lo = np.where(wrows >= 0, wrows, np.iinfo(np.int32).max).min(1).astype(np.int64)
    hi = wrows.max(1).astype(np.int64)
    keys, order = dc.by_feature
    f = features.astype(np.int64) << 32
    a = np.searchsorted(keys, f | lo)
    b = np.searchsorted(keys, f | hi, side="right")
    cnt = b - a
    ctx = np.repeat(np.arange(n), cnt)
    idx = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(a, cnt)
    e = order[idx]
    acts = np.zeros((n, 2 * w + 1), dtype=np.float32)
    acts[ctx, dc.row_pos[dc.rows[e]] - pos[ctx] + w] = dc.vals[e]
    start = np.maximum(pos - w, 0)
    return acts, valid, start.astype(np.int32), (pos - start).astype(np.int16)


def domain_contexts(dc: DomainCodes, d_sae: int, max_act: np.ndarray, cfg: AnalysisConfig,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Columns (and the activation grid) of one domain's contexts, unsorted."""
    sel = select_contexts(dc, d_sae, max_act, cfg, rng)
    e = sel.pop("entry").astype(np.int64)
    rows = dc.rows[e]
    feats = dc.cols[e].astype(np.int64)
    acts, valid, start, center = windows(dc, rows, feats, cfg.window)
    return {**sel, "feature": feats, "activation": dc.vals[e], "seq": dc.row_seq[rows], "pos": dc.row_pos[rows],
            "held_out": rows >= dc.val_start, "window_start": start, "center": center, "acts": acts, "valid": valid}


def context_table(run_id: str, domains: list[DomainCodes], parts: list[dict[str, np.ndarray]]) -> pa.Table:
    """The ``feature_context_rows`` of a run, sorted by (feature, domain, kind, rank) so the
    inspector's point query touches one stretch of the table."""
    dom = np.concatenate([np.full(len(p["feature"]), i, np.int64) for i, p in enumerate(parts)])
    col = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((col["rank"], col["kind"], dom, col["feature"]))
    col = {k: v[order] for k, v in col.items()}
    dom = dom[order]
    n = len(order)
    valid = col["valid"]
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(valid.sum(1))
    kinds = np.array(["top", "quantile"], dtype=object)[col["kind"].astype(np.int64)]
    q = col["quantile"]
    names = np.array([dc.name for dc in domains], dtype=object)
    keys = np.array([dc.store_key for dc in domains], dtype=object)
    return pa.table({
        "run_id": pa.array(np.full(n, run_id, dtype=object), pa.string()),
        "feature": pa.array(col["feature"].astype(np.int32)),
        "domain": pa.array(names[dom] if n else np.zeros(0, dtype=object), pa.string()),
        "kind": pa.array(kinds, pa.string()),
        "rank": pa.array(col["rank"].astype(np.int32)),
        "quantile": pa.array(q.astype(np.int16), mask=q < 0),
        "q_lower": pa.array(col["q_lower"].astype(np.float32), mask=np.isnan(col["q_lower"])),
        "q_upper": pa.array(col["q_upper"].astype(np.float32), mask=np.isnan(col["q_upper"])),
        "activation": pa.array(col["activation"].astype(np.float32)),
        "activation_set": pa.array(keys[dom] if n else np.zeros(0, dtype=object), pa.string()),
        "seq": pa.array(col["seq"].astype(np.int32)),
        "pos": pa.array(col["pos"].astype(np.int32)),
        "held_out": pa.array(col["held_out"].astype(bool)),
        "window_start": pa.array(col["window_start"].astype(np.int32)),
        "center": pa.array(col["center"].astype(np.int16)),
        "acts": pa.ListArray.from_arrays(pa.array(offsets), pa.array(col["acts"][valid].astype(np.float32))),
    })


TOKEN_SEPARATOR = "\x1f"  # joins a sequence's tokens in token_sequences; display strings never contain it


def sequence_table(dc: DomainCodes, vocab: Vocab) -> pa.Table:
    """``token_sequences`` rows of a domain's activation set: every sequence's tokens, joined."""
    n_seq, seq_len = dc.tokens.shape
    offsets = np.arange(n_seq + 1, dtype=np.int32) * seq_len
    lists = pa.ListArray.from_arrays(pa.array(offsets), vocab.take(dc.tokens.reshape(-1)))
    return pa.table({
        "activation_set": pa.array([dc.store_key] * n_seq, pa.string()),
        "seq": pa.array(np.arange(n_seq, dtype=np.int32)),
        "tokens": pc.binary_join(lists, TOKEN_SEPARATOR),
    })
