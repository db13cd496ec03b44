"""The concept map: every live feature as a point, clustered, with a summary per cluster.

Feature vector (seed 000): the decoder row (unit length: only its direction matters) followed by
the selectivity statistics [freqA - freqB, magA - magB, freqA, freqB] (for N domains:
[freq_sel_d ..., mag_sel_d ..., freq_d ...]). PCA gives the 2D map (components 1-2) and the 3D
map (1-3); k-means (k = 10) runs on the first ``cluster_dims`` components (the seed: the map's 3).

Scaling: the seed concatenates raw numbers, so the statistics weigh whatever their units make
them -- activation magnitudes of a few units swamp a unit-length decoder row, and frequencies of
1e-3 vanish next to it. ``balanced`` (the default) z-scores each statistic over the live features
and scales the block so it carries the same total variance as the decoder block: half the map is
what the feature writes, half where and how strongly it fires. ``raw`` reproduces the seed.

Everything is seeded (PCA with the full SVD, k-means with fixed n_init and random_state, t-SNE
with random_state), so the same run and seed give the same map and clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from engine.analysis.stats import FeatureStats


@dataclass
class ConceptMap:
    coords: np.ndarray  # [F, 3] PCA coordinates (NaN for dead features)
    tsne2: np.ndarray | None  # [F, 2]
    tsne3: np.ndarray | None  # [F, 3]
    cluster: np.ndarray  # [F] int64, -1 for dead features
    centres: np.ndarray  # [k, cluster_dims]
    explained: list[float]
    central: list[list[int]]  # per cluster, member features nearest the centre


def stat_block(stats: FeatureStats) -> np.ndarray:
    """[F, s] selectivity statistics of the feature vector, in the seed's order."""
    freq = stats.freq
    mean = np.nan_to_num(stats.mean_act)
    D = freq.shape[0]
    if D == 1:
        return freq.T.copy()
    if D == 2:
        return np.stack([freq[0] - freq[1], mean[0] - mean[1], freq[0], freq[1]], 1)
    return np.concatenate([stats.freq_sel.T, stats.mag_sel.T, freq.T], 1)


def feature_vectors(W_dec: np.ndarray, stats: FeatureStats) -> np.ndarray:
    """The raw (unscaled) map input: unit decoder row (+) statistics."""
    W = W_dec / np.maximum(np.linalg.norm(W_dec, axis=1, keepdims=True), 1e-12)
    return np.concatenate([W, stat_block(stats)], 1)


def scaled_vectors(raw: np.ndarray, d_in: int, live: np.ndarray, scaling: str) -> np.ndarray:
    """What PCA sees (rows of live features only)."""
    X = raw[live].astype(np.float64)
    if scaling == "raw":
        return X
    dec, st = X[:, :d_in], X[:, d_in:]
    dec_var = float(dec.var(0).sum())
    sd = st.std(0)
    z = np.where(sd > 0, (st - st.mean(0)) / np.where(sd > 0, sd, 1), 0.0)
    n_stats = max(int((sd > 0).sum()), 1)
    return np.concatenate([dec, z * np.sqrt(dec_var / n_stats)], 1)


def compute_map(W_dec: np.ndarray, stats: FeatureStats, n_clusters: int, cluster_dims: int, seed: int,
                scaling: str = "balanced", tsne: bool = False, n_init: int = 10, n_central: int = 5) -> ConceptMap:
    # deferred: threadpoolctl comes with scikit-learn, needed only for the map
    from threadpoolctl import threadpool_limits

    # One BLAS/OpenMP thread: these matrices are small (features x ~400), and on a shared machine
    # spinning thread pools made PCA + k-means 50x slower (8 s instead of 0.2 s, measured).
    with threadpool_limits(limits=1):
        return _compute_map(W_dec, stats, n_clusters, cluster_dims, seed, scaling, tsne, n_init, n_central)


def _compute_map(W_dec: np.ndarray, stats: FeatureStats, n_clusters: int, cluster_dims: int, seed: int,
                 scaling: str, tsne: bool, n_init: int, n_central: int) -> ConceptMap:
    # deferred: scikit-learn is heavy
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    F, d_in = W_dec.shape
    live = ~stats.dead
    coords = np.full((F, 3), np.nan)
    cluster = np.full(F, -1, dtype=np.int64)
    n_live = int(live.sum())
    if n_live < 2:
        return ConceptMap(coords, None, None, cluster, np.zeros((0, cluster_dims)), [], [])
    X = scaled_vectors(feature_vectors(W_dec, stats), d_in, live, scaling)
    n_comp = min(max(3, cluster_dims), n_live, X.shape[1])
    pca = PCA(n_components=n_comp, svd_solver="full", random_state=seed)
    Z = pca.fit_transform(X)
    coords[live, : min(3, n_comp)] = Z[:, :3]
    coords[live] = np.nan_to_num(coords[live])  # fewer than 3 components: pad with 0
    k = min(n_clusters, n_live)
    C = Z[:, : min(cluster_dims, n_comp)]
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(C)
    labels = _canonical_order(km.labels_, C)
    cluster[live] = labels
    centres = np.stack([C[labels == c].mean(0) for c in range(k)])
    live_idx = np.nonzero(live)[0]
    central = []
    for c in range(k):  # k (10) iterations, not per feature
        members = np.nonzero(labels == c)[0]
        dist = np.linalg.norm(C[members] - centres[c], axis=1)
        central.append(live_idx[members[np.argsort(dist, kind="stable")[:n_central]]].tolist())
    tsne2 = tsne3 = None
    if tsne and n_live > 5:
        # deferred: scikit-learn is heavy
        from sklearn.manifold import TSNE

        base = PCA(n_components=min(50, n_live, X.shape[1]), svd_solver="full", random_state=seed).fit_transform(X)
        perplexity = float(min(30, max(2, (n_live - 1) // 3)))
        tsne2 = np.full((F, 2), np.nan)
        tsne3 = np.full((F, 3), np.nan)
        tsne2[live] = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(base)
        tsne3[live] = TSNE(3, perplexity=perplexity, init="pca", random_state=seed).fit_transform(base)
    return ConceptMap(coords, tsne2, tsne3, cluster, centres, pca.explained_variance_ratio_.tolist(), central)


def _canonical_order(labels: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Renumber clusters by size (largest = 0), ties by first member: stable ids for the same map."""
    k = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=k)
    first = np.array([np.argmax(labels == c) for c in range(k)])
    order = np.lexsort((first, -sizes))
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    return remap[labels]


def cluster_tokens(cluster: np.ndarray, fire_tokens: sp.csr_matrix, corpus: np.ndarray, n_tokens: int,
                   excluded: np.ndarray) -> list[list[int]]:
    """Per cluster, the tokens most characteristic of where its features fire.

    Each member contributes its own token distribution P(t | f fires) with equal weight (so one
    frequent feature does not speak for the cluster); the pooled P_c(t) is scored against the
    corpus P(t) by P_c(t) * log(P_c(t) / P(t)) -- its share of the KL divergence: frequent in
    the cluster *and* distinctive."""
    k = int(cluster.max()) + 1 if (cluster >= 0).any() else 0
    if k == 0:
        return []
    V = fire_tokens.shape[1]
    rowsum = np.asarray(fire_tokens.sum(1)).ravel()
    norm = sp.diags(1.0 / np.maximum(rowsum, 1)) @ fire_tokens
    members = np.nonzero(cluster >= 0)[0]
    M = sp.csr_matrix((np.ones(len(members)), (cluster[members], members)), shape=(k, fire_tokens.shape[0]))
    sizes = np.maximum(np.asarray(M.sum(1)).ravel(), 1)
    pc = np.asarray((M @ norm).todense()) / sizes[:, None]  # [k, V]
    p = np.zeros(V)
    p[: len(corpus)] = corpus / max(corpus.sum(), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(pc > 0, pc * np.log(pc / np.maximum(p, 1e-12)), -np.inf)
    ex = np.zeros(V, dtype=bool)
    ex[: min(len(excluded), V)] = excluded[:V]
    ex[-1] = True  # the "no previous token" bucket
    score[:, ex] = -np.inf
    out = []
    for c in range(k):
        top = np.argsort(-score[c], kind="stable")[:n_tokens]
        out.append([int(t) for t in top if np.isfinite(score[c, t])])
    return out
