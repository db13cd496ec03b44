"""Hook points per architecture family, and forward hooks that read or replace them.

A loaded model is shared by every thread of a process (the app serves sessions from threads), and a
forward hook fires for every forward pass; each hook here therefore acts only on passes made by the
thread that registered it.

``mlp_out`` is the MLP's output before it is added to the residual stream (for BERT: the output of
the MLP's second dense layer, before dropout, the residual add and LayerNorm); ``attn_out`` the
attention block's output projection before the add; ``resid_post`` the block's output.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from core.errors import LabError
from engine.config import HOOK_POINTS

# Where each family keeps its list of blocks, and each hook point's submodule inside a block
# ("" means the block itself).
LAYER_LISTS = ("gpt_neox.layers", "transformer.h", "model.layers", "encoder.layer", "bert.encoder.layer",
               "roberta.encoder.layer", "model.decoder.layers", "layers", "h")
FAMILY_SUBMODULES: dict[str, dict[str, str]] = {
    "gpt_neox": {"mlp_out": "mlp", "attn_out": "attention", "resid_post": ""},
    "gpt2": {"mlp_out": "mlp", "attn_out": "attn", "resid_post": ""},
    "llama": {"mlp_out": "mlp", "attn_out": "self_attn", "resid_post": ""},
    "bert": {"mlp_out": "output.dense", "attn_out": "attention.output.dense", "resid_post": ""},
}
FAMILY_OF = {
    "gpt_neox": "gpt_neox", "gpt2": "gpt2", "gpt_neo": "gpt2", "gptj": "gpt2",
    "llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "gemma": "llama",
    "gemma2": "llama", "olmo": "llama", "phi3": "llama",
    "bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert", "electra": "bert",
}


def family_of(model_type: str) -> str:
    return FAMILY_OF.get(model_type, "llama")


def _get(module: nn.Module, dotted: str) -> nn.Module | None:
    cur: nn.Module | None = module
    for part in dotted.split("."):
        if not part:
            continue
        cur = getattr(cur, part, None)
        if cur is None:
            return None
    return cur


def layer_list(model: nn.Module, n_layers: int) -> nn.ModuleList:
    for path in LAYER_LISTS:
        mod = _get(model, path)
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers:
            return mod
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers:
            return mod
    raise LabError(f"cannot find the {n_layers} transformer blocks of this model: it is not a supported architecture")


def hook_module(model: nn.Module, model_type: str, n_layers: int, hook: str, layer: int) -> nn.Module:
    """The module whose forward output is the activation at (hook, layer)."""
    if hook not in HOOK_POINTS:
        raise LabError(f"unknown hook point '{hook}': use one of {', '.join(HOOK_POINTS)}")
    if not 0 <= layer < n_layers:
        raise LabError(f"layer {layer} is out of range: this model has layers 0 to {n_layers - 1}")
    block = layer_list(model, n_layers)[layer]
    fam = family_of(model_type)
    candidates = [FAMILY_SUBMODULES[fam][hook]]
    # Fallbacks for families not in the table.
    candidates += {"mlp_out": ["mlp", "feed_forward", "output.dense"],
                   "attn_out": ["self_attn", "attn", "attention", "attention.output.dense"],
                   "resid_post": [""]}[hook]
    for sub in candidates:
        mod = block if sub == "" else _get(block, sub)
        if mod is not None:
            return mod
    raise LabError(f"hook point '{hook}' is not found in model type '{model_type}': use resid_post")


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def record(modules: dict[str, nn.Module], sink: dict[str, torch.Tensor]) -> Iterator[None]:
    """Record each module's forward output into ``sink[name]`` (one forward pass, many sites)."""

    owner = threading.get_ident()

    def make(name: str) -> Callable:
        def hook(_mod, _inp, out):
            if threading.get_ident() == owner:  # the model is shared across the app's threads
                sink[name] = _first(out).detach()

        return hook

    handles = [m.register_forward_hook(make(n)) for n, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def replace_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace a module's output with ``fn(output)`` for the duration (splices, interventions)."""

    owner = threading.get_ident()

    def hook(_mod, _inp, out):
        if threading.get_ident() != owner:  # another thread's forward pass on the shared model
            return None
        if isinstance(out, tuple):
            return (fn(out[0]),) + tuple(out[1:])
        return fn(out)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class StopForward(Exception):
    """Raised by a hook to skip the rest of the forward pass once every needed layer is recorded."""


@contextmanager
def stop_after(module: nn.Module) -> Iterator[None]:
    owner = threading.get_ident()

    def hook(_mod, _inp, _out):
        if threading.get_ident() == owner:
            raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
