"""Hook points resolve per architecture family and mean what the README says."""

from __future__ import annotations

import pytest
import torch

from core.errors import LabError
from engine.collection.hooks import hook_module, record
from engine.collection.models import load_model, resolve_model


@pytest.fixture(scope="module")
def minilm():
    return load_model(resolve_model("all-MiniLM-L6-v2"), torch.device("cpu"))


def test_bert_mlp_out_is_the_second_dense_output_before_the_residual_add(minilm):
    model, info = minilm.model, minilm.info
    ids = minilm.tokenizer(["the cat sat on the mat"], return_tensors="pt")["input_ids"]
    sink: dict = {}
    layer = model.encoder.layer[2]
    inter: dict = {}
    h = layer.intermediate.register_forward_hook(lambda m, i, o: inter.setdefault("x", o))
    with record({"mlp": hook_module(model, info.model_type, info.n_layers, "mlp_out", 2),
                 "resid": hook_module(model, info.model_type, info.n_layers, "resid_post", 2),
                 "attn": hook_module(model, info.model_type, info.n_layers, "attn_out", 2)}, sink), torch.no_grad():
        model(input_ids=ids)
    h.remove()
    expected = layer.output.dense(inter["x"])  # W2 · gelu(W1 x) + b2, no dropout, no residual, no LayerNorm
    assert torch.allclose(sink["mlp"], expected, atol=1e-5)
    assert sink["resid"].shape == sink["mlp"].shape == sink["attn"].shape == (1, ids.shape[1], 384)
    assert not torch.allclose(sink["resid"], sink["mlp"])


def test_causal_families_resolve(tiny_neox, tiny_causal_models):
    for path in [tiny_neox, *tiny_causal_models.values()]:
        info = resolve_model(str(path))
        assert info.is_causal and info.n_layers == 3
        loaded = load_model(info, torch.device("cpu"))
        for hook in ("mlp_out", "attn_out", "resid_post"):
            sink: dict = {}
            with record({hook: hook_module(loaded.model, info.model_type, info.n_layers, hook, 1)}, sink), torch.no_grad():
                loaded.model(input_ids=torch.tensor([[5, 6, 7, 8]]))
            assert sink[hook].shape == (1, 4, 64)


def test_bad_layer_and_hook(minilm):
    info = minilm.info
    with pytest.raises(LabError, match="layers 0 to 5"):
        hook_module(minilm.model, info.model_type, info.n_layers, "mlp_out", 6)
    with pytest.raises(LabError, match="unknown hook point"):
        hook_module(minilm.model, info.model_type, info.n_layers, "mlp_in", 1)


def test_hooks_only_see_their_own_threads_forward_passes(minilm):
    import threading

    model, info = minilm.model, minilm.info
    module = hook_module(model, info.model_type, info.n_layers, "mlp_out", 1)
    ids_a = torch.tensor([[101, 7592, 2088, 102]])
    ids_b = torch.tensor([[101, 2009, 2003, 1037, 3231, 102]])
    sink: dict = {}
    other_done = threading.Event()

    def other_thread():
        with torch.no_grad():
            model(input_ids=ids_b)
        other_done.set()

    with record({"a": module}, sink), torch.no_grad():
        t = threading.Thread(target=other_thread)
        t.start()
        other_done.wait(30)
        assert "a" not in sink  # the other thread's pass was not captured
        model(input_ids=ids_a)
    t.join()
    assert sink["a"].shape[1] == 4
