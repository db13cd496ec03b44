"""Feature matching across runs by decoder cosine."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_a_run_matched_against_itself_is_the_identity(analyzed):
    from engine.analysis.matching import match_runs
    from engine.analysis.queries import matches

    m = match_runs(analyzed.lab, analyzed.run_id, analyzed.run_id)
    assert np.array_equal(m.best, np.arange(len(m.best)))
    np.testing.assert_allclose(m.cosine, 1.0, atol=1e-5)
    assert m.mutual.all()
    df = matches(analyzed.lab, analyzed.run_id, analyzed.run_id)
    assert len(df) == len(m.best) and (df["feature_a"] == df["feature_b"]).all()


def test_matching_two_runs_against_brute_force(analyzed):
    from engine.analysis.matching import match_runs
    from engine.artifacts import load_run_sae

    a, b = analyzed.run_ids
    m = match_runs(analyzed.lab, a, b)
    A = torch.nn.functional.normalize(load_run_sae(analyzed.lab, a).W_dec.detach(), dim=1).numpy()
    B = torch.nn.functional.normalize(load_run_sae(analyzed.lab, b).W_dec.detach(), dim=1).numpy()
    S = A @ B.T
    np.testing.assert_array_equal(m.best, S.argmax(1))
    np.testing.assert_allclose(m.cosine, S.max(1), atol=1e-5)
    np.testing.assert_array_equal(m.mutual, S.argmax(0)[S.argmax(1)] == np.arange(len(A)))
    assert 0 < m.summary()["share_mutual"] < 1
    again = match_runs(analyzed.lab, a, b)  # replaces, does not duplicate
    from engine.analysis.queries import matches

    assert len(matches(analyzed.lab, a, b)) == len(again.best)


def test_blocked_matching_equals_one_block():
    from engine.analysis import matching

    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(300, 16, generator=g), torch.randn(200, 16, generator=g)
    whole = matching.match_decoders(A, B)
    old = matching.BLOCK
    matching.BLOCK = 64
    try:
        blocked = matching.match_decoders(A, B)
    finally:
        matching.BLOCK = old
    np.testing.assert_array_equal(whole.best, blocked.best)
    np.testing.assert_array_equal(whole.mutual, blocked.mutual)


def test_runs_of_different_widths_are_refused():
    from core.errors import LabError
    from engine.analysis.matching import match_decoders

    with pytest.raises(LabError, match="different widths"):
        match_decoders(torch.randn(4, 8), torch.randn(4, 6))
