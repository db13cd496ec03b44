"""Training batches: the streamed, per-batch-converted batches equal the plain formulation's."""

from __future__ import annotations

import numpy as np
import pytest

from engine.training.data import ShuffledBatches


def plain_epoch(acts, start, stop, batch, seed, epoch, chunk_rows, scale):
    """The obvious formulation: shuffle chunks, convert and shuffle each chunk whole, cut batches."""
    rng = np.random.default_rng([seed, epoch])
    bounds = list(range(start, stop, chunk_rows))
    carry, out = np.empty((0, acts.shape[1]), np.float32), []
    for ci in rng.permutation(len(bounds)):
        a = bounds[ci]
        chunk = np.asarray(acts[a : min(a + chunk_rows, stop)], np.float32)
        chunk = np.concatenate([carry, chunk[rng.permutation(len(chunk))] * np.float32(scale)])
        n = len(chunk) // batch
        out += [chunk[i * batch : (i + 1) * batch] for i in range(n)]
        carry = chunk[n * batch :]
    return out[: (stop - start) // batch]


@pytest.mark.parametrize("start,stop,batch,chunk_rows", [(0, 9000, 256, 1000), (100, 9000, 300, 700), (0, 9000, 128, 100),
                                                         (0, 9000, 256, 1 << 18), (0, 9000, 500, 333)])
def test_batches_equal_the_plain_formulation(start, stop, batch, chunk_rows):
    acts = np.random.default_rng(0).standard_normal((10_000, 8)).astype(np.float16)
    sb = ShuffledBatches(acts, start, stop, batch, seed=3, chunk_rows=chunk_rows)
    for epoch in (0, 1):
        got = [b.numpy() for b in sb._epoch(epoch, 1.7)]
        want = plain_epoch(acts, start, stop, batch, 3, epoch, chunk_rows, 1.7)
        assert len(got) == len(want) == sb.batches_per_epoch
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
