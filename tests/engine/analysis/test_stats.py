"""Frequency, activation statistics, selectivity and classes equal an independent numpy computation
from the files on disk (the saved SAE weights and the activation stores)."""

from __future__ import annotations

import numpy as np

import db


def test_per_domain_statistics_match_numpy(analyzed, dense):
    rows = db.query(analyzed.lab, "SELECT * FROM feature_domain_stats WHERE run_id = ? ORDER BY feature",
                    [analyzed.run_id])
    assert set(rows["domain"]) == set(dense)
    for domain, f in dense.items():
        r = rows[rows["domain"] == domain].set_index("feature").sort_index()
        fires = (f > 0).sum(0)
        assert len(r) == f.shape[1]
        assert (r["n_tokens"] == f.shape[0]).all()
        # float32 (engine) and float64 (here) may order a near-tie at the k-th place differently.
        assert np.abs(r["n_fires"].to_numpy() - fires).max() <= 2
        assert np.abs(r["n_fires"].to_numpy() - fires).sum() <= 1e-4 * f.shape[0] * 8
        np.testing.assert_allclose(r["freq"], fires / f.shape[0], atol=3 / f.shape[0])
        np.testing.assert_allclose(r["max_act"], f.max(0), rtol=1e-4, atol=1e-5)
        ok = fires >= 20
        mean = np.where(fires > 0, f.sum(0) / np.maximum(fires, 1), np.nan)
        np.testing.assert_allclose(r["mean_act"].to_numpy()[ok], mean[ok], rtol=2e-3)
        assert r["mean_act"].isna().to_numpy()[fires == 0].all() or (r["n_fires"].to_numpy()[fires == 0] > 0).all()
        # histogram: non-zero activations in equal-width bins up to the feature's max over domains
        hist = np.stack(r["hist_counts"].to_numpy())
        assert hist.shape[1] == 20
        np.testing.assert_array_equal(hist.sum(1), r["n_fires"].to_numpy())


def test_selectivity_and_classes_match_numpy(analyzed, dense):
    a, b = analyzed.config.domain_names  # prose, code
    fa, fb = ((dense[d] > 0).mean(0) for d in (a, b))
    with np.errstate(invalid="ignore"):
        ma, mb = (np.nan_to_num(dense[d].sum(0) / (dense[d] > 0).sum(0)) for d in (a, b))
    rows = db.query(analyzed.lab, "SELECT * FROM feature_domain_stats WHERE run_id = ?", [analyzed.run_id])
    ra = rows[rows["domain"] == a].set_index("feature").sort_index()
    rb = rows[rows["domain"] == b].set_index("feature").sort_index()
    np.testing.assert_allclose(ra["freq_sel"], fa - fb, atol=5e-4)  # freqA - freqB
    np.testing.assert_allclose(rb["freq_sel"], fb - fa, atol=5e-4)
    reliable = ((dense[a] > 0).sum(0) >= 20) & ((dense[b] > 0).sum(0) >= 20)
    np.testing.assert_allclose(ra["mag_sel"].to_numpy()[reliable], (ma - mb)[reliable], atol=5e-3)
    s = (fa - fb) / np.where(fa + fb > 0, fa + fb, 1)
    feats = db.query(analyzed.lab, "SELECT feature, class, leaning_domain, dead FROM features WHERE run_id = ? ORDER BY feature",
                     [analyzed.run_id])
    expected = np.where(fa + fb == 0, "dead", np.where(s >= 0.5, f"{a}-leaning", np.where(s <= -0.5, f"{b}-leaning", "shared")))
    clear = np.abs(np.abs(s) - 0.5) > 0.02  # away from the threshold, where a tie flip could not matter
    assert (feats["class"].to_numpy()[clear] == expected[clear]).all()
    assert set(feats["class"]) <= {f"{a}-leaning", f"{b}-leaning", "shared", "dead"}
    lean = feats["leaning_domain"].fillna("").to_numpy()
    assert ((lean == a) == (feats["class"] == f"{a}-leaning")).all()
    # dead features are listed as such and fire nowhere
    dead = feats["dead"].to_numpy()
    assert (dead == ((fa + fb) == 0))[clear | dead].all()
    info = db.query(analyzed.lab, "SELECT n_dead, n_live, d_sae FROM analysis_runs WHERE run_id = ?", [analyzed.run_id]).iloc[0]
    assert info["n_dead"] == dead.sum() and info["n_live"] + info["n_dead"] == info["d_sae"]


def test_classes_for_three_domains_use_each_domain_against_the_rest():
    from engine.analysis.stats import FeatureStats

    # feature 0 fires 10x more on c than elsewhere; 1 is even; 2 is dead
    n_tokens = np.array([1000, 1000, 1000])
    n_fires = np.array([[10, 50, 0], [10, 50, 0], [100, 50, 0]])
    st = FeatureStats(["a", "b", "c"], n_tokens, n_fires, n_fires * 2.0, np.ones((3, 3), np.float32),
                      np.zeros((3, 3, 4), np.int32), np.ones(3, np.float32), 0.5)
    cls, lean = st.classes()
    assert list(cls) == ["c-leaning", "shared", "dead"]
    assert list(lean) == ["c", None, None]
    np.testing.assert_allclose(st.freq_sel[2], [0.1 - 0.01, 0, 0])
    np.testing.assert_allclose(st.selectivity[2, 0], (0.1 - 0.01) / (0.1 + 0.01))
