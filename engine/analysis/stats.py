"""Per feature and domain: frequency, activation statistics, histograms, selectivity, class.

Definitions (also in the schema comments, so the SQL page states them):
  freq_d      = tokens of domain d where the feature fires (activation > 0) / tokens of d
  mean_act_d  = mean activation over those firing tokens ("mag" in the seeds)
  freq_sel_d  = freq_d - freq_rest, freq_rest = fires on the other domains / their tokens
                (two domains: freqA - freqB, the seed's selectivity)
  mag_sel_d   = mean_act_d - mean_act_rest, a side where it never fires counting as 0
  s_d         = (freq_d - freq_rest) / (freq_d + freq_rest) in [-1, 1]
  class       = "<d>-leaning" for the d with the largest s_d when s_d >= threshold (default 0.5,
                i.e. it fires at least 3x as often on d as elsewhere), "shared" otherwise,
                "dead" when it fires on no token of any domain.
Everything is a bincount over the sparse entries: no loop over features or tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.codes import DomainCodes


@dataclass
class FeatureStats:
    domains: list[str]
    n_tokens: np.ndarray  # [D] int64
    n_fires: np.ndarray  # [D, F] int64
    sum_act: np.ndarray  # [D, F] float64
    max_act: np.ndarray  # [D, F] float32 (0 where it never fires)
    hist: np.ndarray  # [D, F, bins] int32
    hist_max: np.ndarray  # [F] float32, upper edge of the shared histogram bins
    threshold: float

    @property
    def d_sae(self) -> int:
        return self.n_fires.shape[1]

    @property
    def freq(self) -> np.ndarray:
        return self.n_fires / np.maximum(self.n_tokens[:, None], 1)

    @property
    def mean_act(self) -> np.ndarray:
        """[D, F] mean activation when firing; NaN where it never fires on that domain."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n_fires > 0, self.sum_act / np.maximum(self.n_fires, 1), np.nan)

    def _rest(self) -> tuple[np.ndarray, np.ndarray]:
        """freq and mean activation of every domain's complement (the other domains pooled)."""
        tot_fires = self.n_fires.sum(0, keepdims=True)
        tot_sum = self.sum_act.sum(0, keepdims=True)
        rest_tokens = self.n_tokens.sum() - self.n_tokens
        rest_fires = tot_fires - self.n_fires
        rest_sum = tot_sum - self.sum_act
        freq_rest = rest_fires / np.maximum(rest_tokens[:, None], 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_rest = np.where(rest_fires > 0, rest_sum / np.maximum(rest_fires, 1), np.nan)
        return freq_rest, mean_rest

    @property
    def freq_sel(self) -> np.ndarray | None:
        if len(self.domains) < 2:
            return None
        return self.freq - self._rest()[0]

    @property
    def mag_sel(self) -> np.ndarray | None:
        if len(self.domains) < 2:
            return None
        return np.nan_to_num(self.mean_act) - np.nan_to_num(self._rest()[1])

    @property
    def selectivity(self) -> np.ndarray | None:
        """[D, F] normalised s_d in [-1, 1]; NaN where the feature is dead."""
        if len(self.domains) < 2:
            return None
        f, fr = self.freq, self._rest()[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(f + fr > 0, (f - fr) / (f + fr), np.nan)

    @property
    def dead(self) -> np.ndarray:
        return self.n_fires.sum(0) == 0

    def classes(self) -> tuple[np.ndarray, np.ndarray]:
        """(class per feature, leaning domain per feature or None), as object arrays."""
        F = self.d_sae
        cls = np.full(F, "shared", dtype=object)
        lean = np.full(F, None, dtype=object)
        s = self.selectivity
        if s is not None:
            s0 = np.nan_to_num(s, nan=-np.inf)
            best = s0.argmax(0)
            strong = s0[best, np.arange(F)] >= self.threshold
            names = np.array(self.domains, dtype=object)
            lean[strong] = names[best[strong]]
            cls[strong] = np.char.add(names[best[strong]].astype(str), "-leaning").astype(object)
        cls[self.dead] = "dead"
        lean[self.dead] = None
        return cls, lean


def compute_stats(domains: list[DomainCodes], d_sae: int, bins: int, threshold: float) -> FeatureStats:
    D = len(domains)
    n_fires = np.zeros((D, d_sae), dtype=np.int64)
    sum_act = np.zeros((D, d_sae), dtype=np.float64)
    max_act = np.zeros((D, d_sae), dtype=np.float32)
    for i, dc in enumerate(domains):
        n_fires[i] = np.bincount(dc.cols, minlength=d_sae)
        sum_act[i] = np.bincount(dc.cols, weights=dc.vals, minlength=d_sae)
        np.maximum.at(max_act[i], dc.cols, dc.vals)
    hist_max = max_act.max(0)
    hist = np.zeros((D, d_sae, bins), dtype=np.int32)
    for i, dc in enumerate(domains):
        top = hist_max[dc.cols]
        b = np.minimum((dc.vals / np.maximum(top, 1e-30) * bins).astype(np.int64), bins - 1)  # (0, max] -> 0..bins-1
        hist[i] = np.bincount(dc.cols.astype(np.int64) * bins + b, minlength=d_sae * bins).reshape(d_sae, bins)
    n_tokens = np.array([dc.n_rows for dc in domains], dtype=np.int64)
    return FeatureStats([dc.name for dc in domains], n_tokens, n_fires, sum_act, max_act, hist, hist_max, threshold)

