"""Reconstruction and sparsity metrics on held-out activations, accumulated in float64.

Formulas (stated next to every number the lab shows):
  MSE       = Σ ||x − x̂||² / (N · d)
  FVU       = Σ ||x − x̂||² / Σ ||x − x̄||²     (x̄ = mean over the eval set: mean-centred)
  R²        = 1 − FVU                         (explained variance)
  cosine    = mean over tokens of cos(x, x̂)
  L0        = mean number of active latents per token
  L1        = mean Σ_j f_j per token (latents in the SAE's input-scaled units)
  dead_frac = share of latents that never fire on the eval set
  l2_ratio  = mean ||x̂|| / ||x||
FVU around zero (Σ||x − x̂||² / Σ||x||²) reads far too optimistic on activations with a large mean;
SAELens fixed exactly that (issues #443, #659); the lab never reports it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from engine.evaluation.codes import CHUNK_ROWS, CODES, CodeCache, Encoder, RowCodes, encode_rows, to_numpy
from engine.training.sae import SparseAutoencoder


@dataclass
class ReconstructionMetrics:
    n_tokens: int
    mse: float
    fvu: float
    r2: float
    cosine: float
    l0: float
    l1: float
    dead_frac: float
    l2_ratio: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class FeatureTops:
    """Top activations per latent on the eval set: what the quality score's interpretability uses."""

    values: np.ndarray  # [d_sae, n]
    rows: np.ndarray  # [d_sae, n] eval-row index of each
    fire_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))


class MetricAccumulator:
    def __init__(self, d_in: int, d_sae: int, top_n: int = 0):
        self.n = 0
        self.sq_err = 0.0
        self.sum_x = np.zeros(d_in, dtype=np.float64)
        self.sum_x_sq = 0.0
        self.cos = 0.0
        self.l0 = 0.0
        self.l1 = 0.0
        self.l2_ratio = 0.0
        self.fire_counts = np.zeros(d_sae, dtype=np.int64)
        self.top_n = top_n
        self.top_vals = torch.full((d_sae, top_n), -1.0, dtype=torch.float32)
        self.top_rows = torch.full((d_sae, top_n), -1, dtype=torch.int64)

    def add(self, x: torch.Tensor, x_hat: torch.Tensor, code, row_offset: int) -> None:
        x64, xh64 = x.double(), x_hat.double()
        err = x64 - xh64
        self.n += x.shape[0]
        self.sq_err += float((err * err).sum())
        self.sum_x += x64.sum(0).cpu().numpy()
        self.sum_x_sq += float((x64 * x64).sum())
        xn, xhn = x64.norm(dim=1), xh64.norm(dim=1)
        self.cos += float(((x64 * xh64).sum(1) / (xn * xhn).clamp_min(1e-12)).sum())
        self.l2_ratio += float((xhn / xn.clamp_min(1e-12)).sum())
        active = code.vals > 0
        self.l0 += float(active.sum())
        self.l1 += float(code.vals.clamp_min(0).sum())
        self.fire_counts += np.bincount(code.cols[active].cpu().numpy(), minlength=len(self.fire_counts))
        if self.top_n:
            dense = code.dense(len(self.fire_counts)).t()  # [d_sae, batch]
            n = min(self.top_n, dense.shape[1])
            v, i = dense.topk(n, dim=1)
            cand_v = torch.cat([self.top_vals, v.float().cpu()], 1)
            cand_r = torch.cat([self.top_rows, (i + row_offset).cpu()], 1)
            best_v, best_i = cand_v.topk(self.top_n, dim=1)
            self.top_vals, self.top_rows = best_v, cand_r.gather(1, best_i)

    def result(self) -> ReconstructionMetrics:
        n = max(self.n, 1)
        d = len(self.sum_x)
        mean = self.sum_x / n
        total_var = self.sum_x_sq - n * float(mean @ mean)
        fvu = self.sq_err / total_var if total_var > 0 else float("nan")
        return ReconstructionMetrics(
            n_tokens=self.n,
            mse=self.sq_err / (n * d),
            fvu=fvu,
            r2=1 - fvu,
            cosine=self.cos / n,
            l0=self.l0 / n,
            l1=self.l1 / n,
            dead_frac=float((self.fire_counts == 0).mean()),
            l2_ratio=self.l2_ratio / n,
        )

    def tops(self) -> FeatureTops:
        return FeatureTops(self.top_vals.numpy(), self.top_rows.numpy(), self.fire_counts)


@torch.no_grad()
def evaluate_reconstruction(
    sae: SparseAutoencoder,
    acts: np.ndarray,
    start: int,
    stop: int,
    device: torch.device,
    top_n: int = 0,
    chunk_rows: int = CHUNK_ROWS,
    keep_codes: tuple[str, str, str, int] | None = None,
    encoder: Encoder | None = None,
    cache: CodeCache = CODES,
) -> tuple[ReconstructionMetrics, FeatureTops]:
    """Stream rows [start, stop) of a float16 activation file through the SAE.

    ``keep_codes = (run_id, activation set key, hook, layer)`` leaves the rows' sparse codes in
    ``cache`` for the run's analysis in this process (``engine.evaluation.codes``)."""
    sae = sae.to(device).eval()
    encoder = encoder or Encoder.of(sae, device)
    acc = MetricAccumulator(sae.d_in, sae.d_sae, top_n)
    parts: list[RowCodes] = []
    for a, x, code in encode_rows(encoder, acts, start, stop, chunk_rows):
        x_hat = sae.decode_sparse(code)
        acc.add(x, x_hat, code, a - start)
        if keep_codes is not None:
            parts.append(RowCodes(a, a + code.batch, *to_numpy(code, a)))
    if keep_codes is not None:
        run_id, store_key, hook, layer = keep_codes
        codes = RowCodes.join(parts)
        codes.start, codes.stop = start, stop
        cache.put(CodeCache.key(run_id, encoder, store_key, hook, layer, start, stop, chunk_rows), codes)
    return acc.result(), acc.tops()
