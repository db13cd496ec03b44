"""Training batches streamed from a memory-mapped float16 activation file.

Rows are read a chunk at a time (``chunk_rows``), shuffled within the chunk, with chunk order
shuffled per epoch; memory stays bounded by the chunk however large the store is. The order of
epoch ``e`` depends only on (seed, e), so a run resumed at step s sees the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


class ShuffledBatches:
    def __init__(self, acts: np.ndarray, start: int, stop: int, batch_size: int, seed: int, chunk_rows: int = 1 << 18):
        if stop - start < batch_size:
            batch_size = max(1, stop - start)
        self.acts, self.start, self.stop = acts, start, stop
        self.batch_size, self.seed, self.chunk_rows = batch_size, seed, chunk_rows

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

    @property
    def batches_per_epoch(self) -> int:
        return self.n_rows // self.batch_size

    def _epoch(self, epoch: int, scale: float = 1.0) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        bounds = list(range(self.start, self.stop, self.chunk_rows))
        carry = np.empty((0, self.acts.shape[1]), dtype=np.float32)
        emitted = 0
        for ci in rng.permutation(len(bounds)):
            a = bounds[ci]
            b = min(a + self.chunk_rows, self.stop)
            chunk = np.asarray(self.acts[a:b], dtype=np.float32)
            chunk = chunk[rng.permutation(len(chunk))]
            if scale != 1.0:
                chunk *= np.float32(scale)
            if len(carry):
                chunk = np.concatenate([carry, chunk])
            n_full = len(chunk) // self.batch_size
            for i in range(n_full):
                if emitted >= self.batches_per_epoch:
                    return
                yield chunk[i * self.batch_size : (i + 1) * self.batch_size]
                emitted += 1
            carry = chunk[n_full * self.batch_size :]

    def iterate(self, start_step: int, total_steps: int, device: torch.device, scale: float = 1.0) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (step, batch × scale) for steps start_step .. total_steps-1."""
        step = start_step
        bpe = max(self.batches_per_epoch, 1)
        while step < total_steps:
            epoch, skip = divmod(step, bpe)
            for i, batch in enumerate(self._epoch(epoch, scale)):
                if i < skip:
                    continue
                yield step, torch.from_numpy(batch).to(device)
                step += 1
                if step >= total_steps:
                    return


def mean_sq_norm_and_mean(acts: np.ndarray, start: int, stop: int, chunk_rows: int = 1 << 18) -> tuple[float, np.ndarray]:
    total_sq = 0.0
    total = np.zeros(acts.shape[1], dtype=np.float64)
    for a in range(start, stop, chunk_rows):
        c = np.asarray(acts[a : min(a + chunk_rows, stop)], dtype=np.float64)
        total_sq += float((c**2).sum())
        total += c.sum(0)
    n = max(stop - start, 1)
    return total_sq / n, total / n
