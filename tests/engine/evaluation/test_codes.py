"""The shared encoder pass (engine.evaluation.codes): bf16 selection gives the fp32 path's latents,
the SAE in memory and the one loaded from its folder give the same bits, and the cache is bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.evaluation.codes import CodeCache, Encoder, RowCodes, encode_range


@pytest.fixture(scope="module")
def run_and_acts(finished_lab):
    from engine.artifacts import load_run, stores_for_run

    lab, _config, outcomes = finished_lab
    run = load_run(lab, outcomes[0].run_id, "cpu")
    stores, _ = stores_for_run(lab, run.resolved, run.config)
    acts = np.concatenate([np.asarray(s.acts(run.config.hook, run.config.layer), dtype=np.float32) for s in stores.values()])
    return run, acts


def _canonical(codes: RowCodes) -> RowCodes:
    """Entries by (row, latent): the order within a row is whatever the selection left."""
    o = np.lexsort((codes.cols, codes.rows))
    return RowCodes(codes.start, codes.stop, codes.rows[o], codes.cols[o], codes.vals[o])


def _per_row(codes: RowCodes, n: int) -> list[set[int]]:
    out = [set() for _ in range(n)]
    for r, c in zip(codes.rows.tolist(), codes.cols.tolist()):
        out[r].add(c)
    return out


def test_bf16_selection_picks_the_fp32_latents(run_and_acts):
    run, acts = run_and_acts
    fp32 = Encoder.of(run.sae, "cpu", bf16=False)
    bf16 = Encoder.of(run.sae, "cpu", bf16=True)  # forced: it runs (slowly) on a CPU without native bf16 too
    assert bf16.bf16 and not fp32.bf16
    a = _canonical(encode_range(fp32, acts, 0, len(acts), chunk_rows=4096))
    b = _canonical(encode_range(bf16, acts, 0, len(acts), chunk_rows=4096))
    # The old path, sae.encode_sparse on the unfolded weights, for reference.
    with torch.inference_mode():
        old = run.sae.encode_sparse(torch.from_numpy(acts))
    keep = old.vals > 0
    old_sets = _per_row(RowCodes(0, len(acts), old.rows[keep].numpy(), old.cols[keep].numpy(), old.vals[keep].numpy()),
                        len(acts))
    sa, sb = _per_row(a, len(acts)), _per_row(b, len(acts))
    differ = [i for i in range(len(acts)) if sa[i] != sb[i] or sa[i] != old_sets[i]]
    # Only a near-tie at fp32 rounding can swap a latent (none on this data, 1 row in 100k on the default run).
    assert len(differ) <= len(acts) // 1000, differ[:5]
    same = np.array([sa[i] == sb[i] for i in range(len(acts))])[a.rows]
    assert same.mean() > 0.999
    np.testing.assert_allclose(b.vals[same], a.vals[same], rtol=2e-5, atol=1e-6)
    assert np.all(np.diff(a.rows) >= 0) and np.all(a.vals > 0)


def test_bf16_rows_it_cannot_certify_fall_back_to_fp32():
    """Rows whose values are nearly flat cannot be certified from bf16: they are redone in fp32 and
    still give the exact top k."""
    from engine.training.sae import SparseAutoencoder

    torch.manual_seed(0)
    sae = SparseAutoencoder(16, 64, "topk", k=4)
    sae.init_weights(torch.Generator().manual_seed(0))
    x = torch.randn(300, 16)
    x[:100] *= 1e-3  # tiny inputs: every pre-activation close to the (zero) bias, differences below bf16's resolution
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(0, 1e-4, 64))
    enc = Encoder.of(sae, "cpu", bf16=True)
    got = _canonical(encode_range(enc, x.numpy(), 0, 300))
    ref = _canonical(encode_range(Encoder.of(sae, "cpu", bf16=False), x.numpy(), 0, 300))
    assert enc.fallback_rows > 0
    np.testing.assert_array_equal(got.rows, ref.rows)
    np.testing.assert_array_equal(got.cols, ref.cols)
    np.testing.assert_allclose(got.vals, ref.vals, rtol=1e-5, atol=1e-7)


def test_the_sae_in_memory_and_its_saved_folder_encode_to_the_same_bits(tmp_path):
    """Evaluation encodes with the SAE that just trained (input scale not folded), analysis with the one
    loaded from disk: both encode from the folded tensors, so the codes (and the cache key) agree."""
    from engine.training.sae import SparseAutoencoder

    sae = SparseAutoencoder(32, 128, "topk", k=8)
    sae.init_weights(torch.Generator().manual_seed(1), data_mean=torch.randn(32), scale=3.7)
    sae.save(tmp_path / "sae", {"run_id": "r"})
    loaded = SparseAutoencoder.load(tmp_path / "sae")
    x = np.random.default_rng(0).normal(size=(500, 32)).astype(np.float32)
    for bf16 in (False, True):
        e1, e2 = Encoder.of(sae, "cpu", bf16=bf16), Encoder.of(loaded, "cpu", bf16=bf16)
        assert e1.fingerprint == e2.fingerprint
        c1, c2 = encode_range(e1, x, 0, 500, 128), encode_range(e2, x, 0, 500, 128)
        for f in ("rows", "cols", "vals"):
            np.testing.assert_array_equal(getattr(c1, f), getattr(c2, f))


def test_cache_is_bounded_and_dropped_per_run():
    def codes(n: int) -> RowCodes:
        return RowCodes(0, n, np.zeros(n, np.int32), np.zeros(n, np.int32), np.ones(n, np.float32))

    cache = CodeCache(max_bytes=12 * 250)  # room for 250 entries
    cache.put(("a", 1), codes(100))
    cache.put(("b", 1), codes(100))
    assert cache.get(("a", 1)) is not None and len(cache) == 2
    cache.put(("b", 2), codes(100))  # over the bound: the oldest goes
    assert cache.get(("a", 1)) is None and len(cache) == 2
    cache.put(("c", 1), codes(1000))  # larger than the whole bound: not kept
    assert cache.get(("c", 1)) is None
    cache.drop("b")
    assert len(cache) == 0
