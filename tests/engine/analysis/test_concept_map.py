"""The concept map: its inputs and coordinates equal an independent numpy computation, and the
map and clusters are deterministic for a seed."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

import db


@pytest.fixture(scope="module")
def engine_side(analyzed):
    """The engine's own encoding and statistics of the run (what analyze_run fed the map)."""
    from engine.analysis.codes import load_run_data
    from engine.analysis.stats import compute_stats

    data = load_run_data(analyzed.lab, analyzed.run_id)
    stats = compute_stats(data.domains, data.d_sae, 20, 0.5)
    return data, stats


def numpy_map_inputs(analyzed, dense) -> tuple[np.ndarray, np.ndarray]:
    """Seed 000's feature vectors: unit decoder row (+) [freqA - freqB, magA - magB, freqA, freqB]."""
    W = load_file(str(analyzed.lab.run_dir(analyzed.run_id) / "sae" / "sae_weights.safetensors"))["W_dec"].astype(np.float64)
    a, b = analyzed.config.domain_names
    fa, fb = ((dense[d] > 0).mean(0) for d in (a, b))
    with np.errstate(invalid="ignore"):
        ma, mb = (np.nan_to_num(dense[d].sum(0) / (dense[d] > 0).sum(0)) for d in (a, b))
    unit = W / np.linalg.norm(W, axis=1, keepdims=True)
    return unit, np.stack([fa - fb, ma - mb, fa, fb], 1)


def test_map_inputs_match_numpy(analyzed, dense, engine_side):
    from engine.analysis.concept_map import feature_vectors

    data, stats = engine_side
    unit, st = numpy_map_inputs(analyzed, dense)
    ours = feature_vectors(data.sae.W_dec.detach().numpy(), stats)
    assert ours.shape == (unit.shape[0], unit.shape[1] + 4)
    np.testing.assert_allclose(ours[:, : unit.shape[1]], unit, atol=1e-6)
    reliable = (dense["prose"] > 0).sum(0) >= 20
    np.testing.assert_allclose(ours[:, -4], st[:, 0], atol=5e-4)  # freqA - freqB
    np.testing.assert_allclose(ours[reliable, -3], st[reliable, 1], atol=5e-3)  # magA - magB
    np.testing.assert_allclose(ours[:, -2:], st[:, 2:], atol=5e-4)  # freqA, freqB


def test_stored_coordinates_are_pca_of_the_balanced_vectors(analyzed, dense):
    """PCA written out: centre, SVD, project; balanced = z-scored stats carrying the decoder block's variance."""
    unit, st = numpy_map_inputs(analyzed, dense)
    live = (st[:, 2] + st[:, 3]) > 0
    dec, stl = unit[live], st[live]
    z = (stl - stl.mean(0)) / stl.std(0)
    X = np.concatenate([dec, z * np.sqrt(dec.var(0).sum() / 4)], 1)
    Xc = X - X.mean(0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    expected = Xc @ Vt[:3].T
    got = db.query(analyzed.lab,
                   "SELECT feature, map_x, map_y, map_z FROM features WHERE run_id = ? AND NOT dead ORDER BY feature",
                   [analyzed.run_id])
    assert np.array_equal(got["feature"].to_numpy(), np.nonzero(live)[0])
    got = got[["map_x", "map_y", "map_z"]].to_numpy()
    for c in range(3):  # a principal component's sign is arbitrary
        sign = np.sign(got[:, c] @ expected[:, c])
        np.testing.assert_allclose(got[:, c], sign * expected[:, c], atol=2e-3 * np.abs(expected[:, c]).max())


def test_map_and_clusters_are_deterministic_for_a_seed(engine_side):
    from engine.analysis.concept_map import compute_map

    data, stats = engine_side
    W = data.sae.W_dec.detach().numpy()
    first = compute_map(W, stats, 10, 3, seed=0)
    again = compute_map(W, stats, 10, 3, seed=0)
    np.testing.assert_array_equal(first.coords, again.coords)
    np.testing.assert_array_equal(first.cluster, again.cluster)
    assert first.central == again.central
    live = ~stats.dead
    assert set(first.cluster[live]) == set(range(10)) and (first.cluster[~live] == -1).all()
    sizes = np.bincount(first.cluster[live])
    assert (np.diff(sizes) <= 0).all()  # cluster 0 is the largest: ids are stable and readable


def test_tsne_option_is_seeded(engine_side):
    from engine.analysis.concept_map import compute_map

    data, stats = engine_side
    n = 60  # t-SNE is slow; its seeding is what is under test
    W = data.sae.W_dec.detach().numpy()[:n]
    sub = type(stats)(stats.domains, stats.n_tokens, stats.n_fires[:, :n], stats.sum_act[:, :n], stats.max_act[:, :n],
                      stats.hist[:, :n], stats.hist_max[:n], stats.threshold)
    a = compute_map(W, sub, 5, 3, seed=1, tsne=True)
    b = compute_map(W, sub, 5, 3, seed=1, tsne=True)
    assert a.tsne2 is not None and a.tsne3 is not None
    np.testing.assert_array_equal(a.tsne2, b.tsne2)
    np.testing.assert_array_equal(a.tsne3, b.tsne3)


def test_cluster_summaries(analyzed):
    from engine.analysis.queries import cluster_summaries

    df = cluster_summaries(analyzed.lab, analyzed.run_id)
    feats = db.query(analyzed.lab, "SELECT feature, cluster, class FROM features WHERE run_id = ?", [analyzed.run_id])
    assert list(df["cluster"]) == list(range(10))
    assert df["size"].sum() == feats["cluster"].notna().sum()
    for _, c in df.iterrows():
        members = set(feats.loc[feats["cluster"] == c["cluster"], "feature"])
        assert 1 <= len(c["central_features"]) <= 5 and set(c["central_features"]) <= members
        assert len(c["top_tokens"]) >= 3 and c["label"] == ", ".join(t.strip() for t in c["top_tokens"][:3])
        assert sum(c["class_counts"].values()) == c["size"]


def test_map_with_too_few_live_features_is_empty_not_an_error(engine_side):
    from engine.analysis.concept_map import compute_map

    data, stats = engine_side
    n = 3
    W = data.sae.W_dec.detach().numpy()[:n]
    fires = stats.n_fires[:, :n].copy()
    fires[:, 1:] = 0  # one live feature
    sub = type(stats)(stats.domains, stats.n_tokens, fires, stats.sum_act[:, :n], stats.max_act[:, :n], stats.hist[:, :n],
                      stats.hist_max[:n], stats.threshold)
    m = compute_map(W, sub, 10, 3, seed=0)
    assert (m.cluster == -1).all() and np.isnan(m.coords).all()
    fires[:, 1] = 5  # two live features, asked for 10 clusters: 2
    m = compute_map(W, sub, 10, 3, seed=0)
    assert sorted(m.cluster[:2]) == [0, 1] and m.cluster[2] == -1
