"""Settings of a feature analysis, saved with it (``analysis_runs.settings``)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config_base import ConfigBase
from engine.errors import LabError


@dataclass
class AnalysisConfig(ConfigBase):
    seed: int = 0  # quantile sampling, k-means, t-SNE
    chunk_rows: int = 16384  # activation rows encoded per step (memory stays bounded by the chunk)
    # Contexts (sae_vis defaults: top 20, 10 equal-width activation intervals x 5 random samples).
    window: int = 10  # tokens each side of the activating token
    top_contexts: int = 20
    n_quantiles: int = 10
    quantile_group_size: int = 5
    # Statistics and classes.
    hist_bins: int = 20
    class_threshold: float = 0.5  # |(f_d - f_rest) / (f_d + f_rest)| >= 0.5 <=> fires >= 3x as often on d
    # Neighbours and token effects.
    n_neighbours: int = 10
    n_token_effects: int = 10
    # Concept map.
    n_clusters: int = 10
    cluster_dims: int = 3  # k-means on this many PCA components (the seed: the map's own 3)
    kmeans_n_init: int = 10
    map_stats_scaling: str = "balanced"  # balanced | raw (the seed's plain concatenation)
    tsne: bool = False
    cluster_tokens: int = 10
    central_features: int = 5
    # Labels.
    label_max_tokens: int = 3
    label_min_count: int = 2  # a label token must co-occur with firing at least this often in training rows
    label_min_share: float = 0.05  # tokens after the first must carry this share of the feature's firing
    label_min_val_fires: int = 5  # fewer held-out firing tokens than this: no detection score
    # Ground-truth concepts (engine/analysis/concepts): scored against the latents on held-out tokens.
    concepts: bool = True

    def validate(self) -> "AnalysisConfig":
        if self.window < 0 or self.window > 64:
            raise LabError(f"analysis window = {self.window} must be 0 to 64 tokens each side")
        for name in ("top_contexts", "n_quantiles", "quantile_group_size", "n_neighbours", "n_token_effects"):
            if getattr(self, name) < 0:
                raise LabError(f"analysis setting {name} = {getattr(self, name)} must be 0 or more")
        if self.hist_bins < 1 or self.chunk_rows < 1:
            raise LabError("analysis hist_bins and chunk_rows must be at least 1")
        if not 0 < self.class_threshold < 1:
            raise LabError(f"class_threshold = {self.class_threshold} must be between 0 and 1 (default 0.5)")
        if self.n_clusters < 1:
            raise LabError(f"n_clusters = {self.n_clusters} must be at least 1 (default 10)")
        if self.cluster_dims < 1:
            raise LabError(f"cluster_dims = {self.cluster_dims} must be at least 1 (default 3)")
        if self.map_stats_scaling not in ("balanced", "raw"):
            raise LabError(f"map_stats_scaling '{self.map_stats_scaling}' must be balanced or raw")
        if self.label_max_tokens < 1:
            raise LabError(f"label_max_tokens = {self.label_max_tokens} must be at least 1")
        return self
