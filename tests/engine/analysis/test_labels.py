"""Labels and their detection scores, checked against a brute-force computation on small codes."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from engine.analysis.codes import DomainCodes
from engine.analysis.vocab import Vocab


def make_codes(rng, name: str, n_seq: int = 120, seq_len: int = 20, V: int = 50) -> tuple[DomainCodes, np.ndarray]:
    """Feature 0 fires on token 7 (and on half of the rare token 9); feature 1 fires after token 3;
    feature 2 fires at random; feature 3 never fires."""
    tokens = rng.integers(10, V, size=(n_seq, seq_len))
    tokens[rng.random(tokens.shape) < 0.05] = 7
    tokens[rng.random(tokens.shape) < 0.004] = 9
    tokens[rng.random(tokens.shape) < 0.05] = 3
    seq, pos = np.nonzero(np.ones_like(tokens, dtype=bool))
    tok, prev = tokens[seq, pos], np.where(pos > 0, tokens[seq, np.maximum(pos - 1, 0)], -1)
    n = len(seq)
    dense = np.zeros((n, 4), dtype=np.float32)
    dense[tok == 7, 0] = 2.0
    dense[(tok == 9) & (rng.random(n) < 0.5), 0] = 1.0
    dense[prev == 3, 1] = 1.5
    dense[rng.random(n) < 0.05, 2] = 1.0
    rows, cols = np.nonzero(dense)
    val_start = int(n * 0.8)
    dc = DomainCodes(name, n, val_start, rows.astype(np.int32), cols.astype(np.int32), dense[rows, cols], tokens.astype(np.int32),
                     seq.astype(np.int32), pos.astype(np.int32), store_key=name)
    return dc, dense


def test_labels_and_detection_scores_match_brute_force():
    from engine.analysis.labels import compute_labels

    rng = np.random.default_rng(0)
    (a, da), (b, db_) = make_codes(rng, "a"), make_codes(rng, "b")
    vocab = Vocab([f"t{i}" for i in range(50)], np.zeros(50, dtype=bool))
    lab = compute_labels([a, b], 4, vocab, max_tokens=3, min_count=2)
    assert lab.text[0] == "t7" and lab.kind[0] == "token"  # token 9 gains, but carries < 5% of the firing: not named
    assert lab.text[1] == "after: t3" and lab.kind[1] == "previous token"
    assert lab.kind[3] is None and np.isnan(lab.score[3])
    for i, (dc, dense) in enumerate(((a, da), (b, db_))):
        held = slice(dc.val_start, dc.n_rows)
        fires = dense[held] > 0
        tok = dc.row_tokens[held]
        prev = np.where(dc.row_prev[held] < 0, 50, dc.row_prev[held])  # "no previous token" is bucket V
        for f in range(3):
            source = prev if lab.kind[f] == "previous token" else tok
            pred = np.isin(source, lab.token_ids[f][lab.token_ids[f] >= 0])
            expected = balanced_accuracy_score(fires[:, f], pred)
            assert abs(lab.domain_score[i, f] - expected) < 1e-9, (f, lab.domain_score[i, f], expected)
    assert lab.score[0] > 0.9 and lab.score[1] > 0.95
    assert 0.4 < lab.score[2] < 0.6
    # pooled score = balanced accuracy over both domains' held-out rows together
    fires = np.concatenate([da[a.val_start:, 0], db_[b.val_start:, 0]]) > 0
    pred = np.concatenate([a.row_tokens[a.val_start:], b.row_tokens[b.val_start:]]) == 7
    assert abs(lab.score[0] - balanced_accuracy_score(fires, pred)) < 1e-9
    assert abs(lab.precision[0] - (fires & pred).sum() / pred.sum()) < 1e-9
    assert abs(lab.recall[0] - (fires & pred).sum() / fires.sum()) < 1e-9


def test_neighbours_correlation_matches_numpy():
    from engine.analysis.neighbours import activation_matrix, correlation_neighbours

    rng = np.random.default_rng(1)
    (a, da), (b, db_) = make_codes(rng, "a"), make_codes(rng, "b")
    dense = np.concatenate([da, db_]).astype(np.float64)
    dense[:, 2] += dense[:, 0] * (rng.random(len(dense)) < 0.5)  # feature 2 co-fires with 0 half the time
    rows, cols = np.nonzero(dense)
    split = len(da)
    a.rows, a.cols = rows[rows < split].astype(np.int32), cols[rows < split].astype(np.int32)
    a.vals = dense[rows[rows < split], cols[rows < split]].astype(np.float32)
    b.rows = (rows[rows >= split] - split).astype(np.int32)
    b.cols = cols[rows >= split].astype(np.int32)
    b.vals = dense[rows[rows >= split], cols[rows >= split]].astype(np.float32)
    live = dense.any(0)
    ids, vals = correlation_neighbours(activation_matrix([a, b], 4), live, 2)
    r = np.corrcoef(dense[:, live].T)
    assert ids[0, 0] == 2 and abs(vals[0, 0] - r[0, 2]) < 1e-6
    assert ids[3, 0] == -1  # a dead feature has no neighbours, and is nobody's
    assert 3 not in ids[:3]


def test_decoder_neighbours_skip_self_and_dead_features():
    import torch

    from engine.analysis.neighbours import decoder_neighbours

    W = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.01], [0.0, 1.0]])
    live = np.array([True, True, False, True])
    ids, vals = decoder_neighbours(W, live, 2)
    assert list(ids[0]) == [1, 3]  # 2 is nearer but dead
    assert list(ids[2]) == [0, 1]  # a dead feature still has live neighbours
    assert abs(vals[0, 0] - 0.9 / np.hypot(0.9, 0.1)) < 1e-6
