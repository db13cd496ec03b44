"""Settings of a feature analysis, saved with it (``analysis_runs.settings``)."""

from __future__ import annotations

from dataclasses import dataclass

from core.config_base import ConfigBase
from core.config_bounds import bounded, seed_field
from core.errors import LabError
from engine.evaluation.chunks import CHUNK_ROWS


@dataclass
class AnalysisConfig(ConfigBase):
    seed: int = seed_field(0)  # quantile sampling, k-means, t-SNE
    # Activation rows encoded per step (memory stays bounded by the chunk); evaluation's, so the held-out
    # codes it leaves behind are read instead of encoded again (another size encodes them anew).
    chunk_rows: int = bounded(CHUNK_ROWS, ge=1, le=2**24)
    # Contexts (sae_vis defaults: top 20, 10 equal-width activation intervals x 5 random samples).
    window: int = bounded(10, ge=0, le=64)  # tokens each side of the activating token
    top_contexts: int = bounded(20, ge=0, le=10_000)
    n_quantiles: int = bounded(10, ge=0, le=1000)
    quantile_group_size: int = bounded(5, ge=0, le=1000)
    # Statistics and classes.
    hist_bins: int = bounded(20, ge=1, le=10_000)
    class_threshold: float = bounded(0.5, gt=0.0,
                                     lt=1.0)  # |(f_d - f_rest) / (f_d + f_rest)| >= 0.5 <=> fires >= 3x as often on d
    # Neighbours and token effects.
    n_neighbours: int = bounded(10, ge=0, le=10_000)
    n_token_effects: int = bounded(10, ge=0, le=10_000)
    # Concept map.
    n_clusters: int = bounded(10, ge=1, le=10_000)
    cluster_dims: int = bounded(3, ge=1, le=1000)  # k-means on this many PCA components (the seed: the map's own 3)
    kmeans_n_init: int = bounded(10, ge=1, le=1000)
    map_stats_scaling: str = "balanced"  # balanced | raw (the seed's plain concatenation)
    tsne: bool = False
    cluster_tokens: int = bounded(10, ge=0, le=1000)
    central_features: int = bounded(5, ge=0, le=1000)
    # Labels.
    label_max_tokens: int = bounded(3, ge=1, le=64)
    # A label token must co-occur with firing at least this often in training rows.
    label_min_count: int = bounded(2, ge=1, le=10**9)
    label_min_share: float = bounded(0.05, ge=0.0, le=1.0)  # tokens after the first must carry this share of the feature's firing
    label_min_val_fires: int = bounded(5, ge=0, le=10**9)  # fewer held-out firing tokens than this: no detection score
    # Ground-truth concepts (engine/analysis/concepts): scored against the latents on held-out tokens.
    concepts: bool = True

    def validate(self) -> "AnalysisConfig":
        """Ranges are declared on the fields (checked on construction and again here)."""
        self.check_bounds("analysis")
        if self.map_stats_scaling not in ("balanced", "raw"):
            raise LabError(f"map_stats_scaling '{self.map_stats_scaling}' must be balanced or raw")
        return self
