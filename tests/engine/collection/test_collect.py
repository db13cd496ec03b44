"""Collection: one pass for all layers gives exactly what one pass per layer gives; stores are reused;
bad corpora and broken models are refused before anything is published."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import LabError
from engine.collection.collect import collect_domain
from engine.collection.models import resolve_model
from engine.config import DataConfig, DomainSpec, parse_domain


def small_data(tokens=1500, **kw) -> DataConfig:
    return DataConfig(domains=[parse_domain("prose")], tokens_per_domain=tokens, seq_len=64, **kw)


def test_one_pass_equals_per_layer_passes_and_is_reused(lab):
    info = resolve_model("all-MiniLM-L6-v2")
    dom = parse_domain("prose")
    data = small_data()
    all_sites = [("mlp_out", layer) for layer in range(6)]
    store = collect_domain(lab, info, torch.device("cpu"), dom, data, 0, all_sites, progress=False)
    assert store.n_rows >= 1500 and store.acts("mlp_out", 5).dtype == np.float16
    assert 0 < store.val_start < store.n_rows
    tokens = store.tokens()
    rows = store.rows()
    special = {101, 102, 0}
    assert not any(int(tokens[s, p]) in special for s, p in rows[:500])  # special tokens are not rows
    # A second lab collecting layers one at a time, each its own pass.
    from core.lab import Lab

    other = Lab.at(lab.root.parent / "other")
    for site in all_sites:
        single = collect_domain(other, info, torch.device("cpu"), dom, data, 0, [site], progress=False)
    for site in all_sites:
        assert np.array_equal(np.asarray(store.acts(*site)), np.asarray(single.acts(*site)))
    # Reuse: asking again collects nothing new.
    mtime = (store.path / "mlp_out_L03.npy").stat().st_mtime_ns
    again = collect_domain(lab, info, torch.device("cpu"), dom, data, 0, all_sites, progress=False)
    assert again.path == store.path and (store.path / "mlp_out_L03.npy").stat().st_mtime_ns == mtime
    # Another hook joins the same store and shares its token ids.
    grown = collect_domain(lab, info, torch.device("cpu"), dom, data, 0, [("resid_post", 1)], progress=False)
    assert grown.path == store.path and grown.has("resid_post", 1) and grown.has("mlp_out", 4)


def test_too_small_and_empty_corpora_are_refused(lab, tmp_path):
    info = resolve_model("all-MiniLM-L6-v2")
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "a.txt").write_text("only a few words here")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    with pytest.raises(LabError, match="has only .* tokens, fewer than"):
        collect_domain(lab, info, torch.device("cpu"), DomainSpec("tiny", f"file:{tmp_path / 'tiny'}"), small_data(), 0,
                       [("mlp_out", 0)], False)
    with pytest.raises(LabError, match="is empty"):
        collect_domain(lab, info, torch.device("cpu"), DomainSpec("empty", f"file:{tmp_path / 'empty'}"), small_data(), 0,
                       [("mlp_out", 0)], False)
    assert not any(p.name.startswith(".tmp") for p in lab.activations.glob("*"))


def test_nan_activations_are_refused_and_nothing_is_published(lab, tiny_neox, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = tmp_path / "broken"
    model = AutoModelForCausalLM.from_pretrained(tiny_neox)
    with torch.no_grad():
        model.gpt_neox.layers[0].mlp.dense_4h_to_h.weight[0, 0] = float("nan")
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_neox).save_pretrained(broken)
    info = resolve_model(str(broken))
    with pytest.raises(LabError, match="NaN or infinite activations"):
        collect_domain(lab, info, torch.device("cpu"), parse_domain("prose"), small_data(), 0, [("mlp_out", 1)], False)
    assert not [p for p in lab.activations.glob("*") if p.is_dir()]
