"""Contexts: every live feature has top contexts on every domain where it fires; windows are +-10
tokens with an activation per token; the centre's activation is the feature's activation there."""

from __future__ import annotations

import numpy as np
import pytest

import db


@pytest.fixture(scope="module")
def contexts(analyzed):
    return db.query(analyzed.lab, "SELECT * FROM feature_contexts WHERE run_id = ?", [analyzed.run_id])


def test_every_live_feature_has_top_contexts_where_it_fires(analyzed, contexts):
    st = db.query(analyzed.lab, "SELECT feature, domain, n_fires FROM feature_domain_stats WHERE run_id = ?", [analyzed.run_id])
    tops = contexts[contexts["kind"] == "top"].groupby(["feature", "domain"]).size()
    for _, r in st.iterrows():
        have = tops.get((r["feature"], r["domain"]), 0)
        assert have == min(20, r["n_fires"]), (r["feature"], r["domain"], have, r["n_fires"])
    assert analyzed.summary["n_contexts"] == len(contexts)


def test_windows_are_plus_minus_ten_with_an_activation_per_token(analyzed, contexts, stores, dense):
    from engine.analysis.vocab import load_vocab
    from engine.collection.models import load_model, resolve_model

    tok = load_model(resolve_model(analyzed.config.model), __import__("torch").device("cpu")).tokenizer
    vocab = load_vocab(tok)
    sample = contexts.sample(n=min(1500, len(contexts)), random_state=0)
    for _, c in sample.iterrows():
        store = stores[c["domain"]]
        tokens = store.tokens()
        seq_len = tokens.shape[1]
        pos, center = int(c["pos"]), int(c["center"])
        n = len(c["tokens"])
        assert n == len(c["acts"])
        assert center == min(pos, 10)
        assert n == center + 1 + min(seq_len - 1 - pos, 10)
        assert c["acts"][center] == pytest.approx(c["activation"])
        window = tokens[c["seq"], pos - center : pos - center + n]
        assert list(c["tokens"]) == [vocab.strings[t] for t in window]
        # the activation itself, from an independent numpy encoding of the same row
        rows = store.rows()
        row = int(np.nonzero((rows[:, 0] == c["seq"]) & (rows[:, 1] == pos))[0][0])
        assert dense[c["domain"]][row, c["feature"]] == pytest.approx(c["activation"], rel=1e-3, abs=1e-4)
        assert c["held_out"] == (row >= store.val_start)


def test_top_contexts_are_the_top_activations_and_quantiles_sit_in_their_interval(analyzed, contexts, dense):
    top = contexts[contexts["kind"] == "top"]
    first = top[top["rank"] == 0].set_index(["feature", "domain"])["activation"]
    for (f, d), act in first.items():
        assert act == pytest.approx(dense[d][:, f].max(), rel=1e-3)
    for _, g in top.groupby(["feature", "domain"]):
        acts = g.sort_values("rank")["activation"].to_numpy()
        assert (np.diff(acts) <= 1e-6).all()
    q = contexts[contexts["kind"] == "quantile"]
    assert q["quantile"].between(0, 9).all()
    assert ((q["activation"] > q["q_lower"] - 1e-5) & (q["activation"] <= q["q_upper"] + 1e-5)).all()
    per_group = q.groupby(["feature", "domain", "quantile"]).size()
    assert per_group.max() == 5
    assert (q["rank"] // 5 == q["quantile"]).all()
