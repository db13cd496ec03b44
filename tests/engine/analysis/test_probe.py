"""The text probe agrees with encoding the text directly through the collection path, and the
corpus-side "top texts for a feature" come back best first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TEXT = "def parse(self, text):\n    return text.split()  # The river flows north."


@pytest.fixture(scope="module")
def prober(analyzed):
    from engine.analysis.probe import Prober

    return Prober(analyzed.lab, analyzed.run_id)


def direct_codes(analyzed, prober) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Tokens, keep mask and dense feature activations via collection's own forward pass."""
    from engine.collection.collect import Sequences, _forward_batches, special_wrapping

    cfg = analyzed.config
    tok = prober.loaded.tokenizer
    pre, post = special_wrapping(tok)
    ids = pre + tok(TEXT, add_special_tokens=False)["input_ids"] + post
    tokens = np.array([ids], dtype=np.int32)
    keep = ~np.isin(tokens, list(prober.loaded.special_ids))
    got = {}
    _forward_batches(prober.loaded, Sequences(tokens, keep, 0), [(cfg.hook, cfg.layer)], 8,
                     lambda _s, _n, acts: got.update(acts), "", False)
    x = torch.from_numpy(got[(cfg.hook, cfg.layer)].astype(np.float32))
    with torch.no_grad():
        f = prober.sae.encode(x).numpy()
    return ids, keep[0], f


def test_probe_matches_direct_encoding(analyzed, prober):
    res = prober.probe(TEXT, top_n=5)
    ids, keep, f = direct_codes(analyzed, prober)
    assert [t.token_id for t in res.tokens] == ids
    rows = iter(f)
    for t, k in zip(res.tokens, keep):
        assert t.special == (not k)
        if not k:
            assert t.features == []
            continue
        row = next(rows)
        expected = [(int(j), float(row[j])) for j in np.argsort(-row, kind="stable")[:5] if row[j] > 0]
        assert [j for j, _ in t.features] == [j for j, _ in expected]
        np.testing.assert_allclose([a for _, a in t.features], [a for _, a in expected], rtol=1e-5, atol=1e-6)
    assert res.totals and res.totals[0][1] == pytest.approx(f.sum(0).max(), rel=1e-5)


def test_rank_texts_finds_the_text_a_feature_fires_on(prober):
    res = prober.probe(TEXT)
    tok = max((t for t in res.tokens if t.features), key=lambda t: t.features[0][1])
    feature, act = tok.features[0]
    ranked = prober.rank_texts(feature, ["The cat sat on the mat.", TEXT, "12345"])
    assert ranked[0]["text"] == TEXT
    assert ranked[0]["activation"] == pytest.approx(act, rel=1e-4)
    assert ranked[0]["token"] == tok.token
    assert [r["activation"] for r in ranked] == sorted((r["activation"] for r in ranked), reverse=True)


def test_probe_refuses_empty_text_and_unknown_feature(prober):
    from core.errors import LabError

    with pytest.raises(LabError, match="empty text"):
        prober.probe("   ")
    with pytest.raises(LabError, match="does not exist"):
        prober.rank_texts(10**6, ["x"])


def test_top_texts_for_a_feature_come_from_the_corpora_best_first(analyzed):
    import db
    from engine.analysis.queries import top_texts

    f = int(db.query(analyzed.lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead ORDER BY n_fires DESC LIMIT 1",
                     [analyzed.run_id]).iloc[0, 0])
    rows = top_texts(analyzed.lab, analyzed.run_id, f, n=15)
    assert len(rows) == 15
    acts = [r["activation"] for r in rows]
    assert acts == sorted(acts, reverse=True)
    for r in rows:
        assert r["token"] == r["tokens"][r["center"]] and r["activation"] > 0
        assert r["token"].lstrip("#") in r["text"]
    only = top_texts(analyzed.lab, analyzed.run_id, f, domain="code", n=5)
    assert {r["domain"] for r in only} <= {"code"}
