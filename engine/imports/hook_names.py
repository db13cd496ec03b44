"""Hook names as other projects write them -> the lab's hook points (``mlp_out``, ``resid_post``, ``attn_out``).

Why a table and not a guess: the same tensor has a different name in every project. SAELens uses
TransformerLens names (``blocks.2.hook_mlp_out``); sparsify and dictionary_learning use module paths
of the Hugging Face model (``layers.2.mlp``, ``gpt_neox.layers.2.mlp``, ``encoder.layer.2.output.dense``),
whose last part means different things per model family (a BERT block's ``attention`` module returns
the residual stream after its LayerNorm, not the attention output); dictionary_learning's released
dictionaries are named ``mlp_out_layer2``; the lab's own SAEs say ``mlp_out@2``. A name the table does
not know is refused in one line rather than mapped to the nearest hook: an SAE evaluated on the
wrong activations gives numbers that look plausible and mean nothing.
"""

from __future__ import annotations

import re

from core.errors import LabError
from engine.config import HOOK_POINTS

# Per model family (engine/collection/hooks.py's families): the sub-module paths inside a block whose
# output is each lab hook point, and the path of the block list under the base model (what sparsify
# names hookpoints by: ``model.base_model.named_modules()``).
SUBMODULE_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "gpt_neox": {"mlp_out": ("mlp", "mlp.dense_4h_to_h"), "attn_out": ("attention", "attention.dense"), "resid_post": ("",)},
    "gpt2": {"mlp_out": ("mlp", "mlp.c_proj"), "attn_out": ("attn", "attn.c_proj"), "resid_post": ("",)},
    "llama": {"mlp_out": ("mlp", "mlp.down_proj"), "attn_out": ("self_attn", "self_attn.o_proj"), "resid_post": ("",)},
    # BERT: BertOutput (``output``) returns LayerNorm(dense + residual), which is the block's output.
    "bert": {"mlp_out": ("output.dense",), "attn_out": ("attention.output.dense",), "resid_post": ("", "output")},
}
BLOCK_LIST = {"gpt_neox": "layers", "gpt2": "h", "llama": "layers", "bert": "encoder.layer"}
LIST_NAMES = ("layers", "layer", "h", "blocks")

TL_HOOKS = {"hook_resid_post": "resid_post", "hook_mlp_out": "mlp_out", "hook_attn_out": "attn_out"}
_TL = re.compile(r"^blocks\.(\d+)\.(hook_[a-z_]+)$")
_LAB = re.compile(r"^(mlp_out|resid_post|attn_out)@(\d+)$")
_DL_NAME = re.compile(r"^(mlp_out|attn_out|resid_out|resid_post|resid)_?(?:layer)?_?(\d+)$")
_MODULE = re.compile(r"^(?:(?P<prefix>[\w.]*?)\.)?(?P<list>" + "|".join(LIST_NAMES) + r")\.(?P<layer>\d+)(?:\.(?P<sub>[\w.]+))?$")

FIX = "pass --hook mlp_out|resid_post|attn_out and --layer N to say which activations it reads"


def family(model_type: str) -> str:
    # deferred: engine.collection.hooks loads torch; the family table is all this needs
    from engine.collection.hooks import family_of

    return family_of(model_type)


def from_name(name: str, model_type: str) -> tuple[str, int, str]:
    """(lab hook, layer, note) for a hook name or module path; a one-line LabError when it is not a lab hook.

    The note is empty unless the mapping is an equivalence worth recording (``hook_resid_pre`` of block
    L is the output of block L - 1)."""
    name = name.strip()
    m = _LAB.match(name)
    if m:
        return m.group(1), int(m.group(2)), ""
    m = _TL.match(name)
    if m:
        layer, hook = int(m.group(1)), m.group(2)
        if hook in TL_HOOKS:
            return TL_HOOKS[hook], layer, ""
        if hook == "hook_resid_pre" and layer > 0:
            return "resid_post", layer - 1, f"{name} is the residual stream entering block {layer}: resid_post of {layer - 1}"
        raise LabError(f"hook '{name}' is not one of the lab's hook points ({', '.join(HOOK_POINTS)}: TransformerLens "
                       f"hook_resid_post, hook_mlp_out, hook_attn_out): the lab cannot evaluate an SAE on it; {FIX}")
    m = _DL_NAME.match(name)
    if m:
        hook = {"resid_out": "resid_post", "resid": "resid_post"}.get(m.group(1), m.group(1))
        return hook, int(m.group(2)), ""
    m = _MODULE.match(name)
    if m:
        sub = m.group("sub") or ""
        fam = family(model_type)
        for hook, subs in SUBMODULE_ALIASES.get(fam, SUBMODULE_ALIASES["llama"]).items():
            if sub in subs:
                return hook, int(m.group("layer")), ""
        known = [s for subs in SUBMODULE_ALIASES.get(fam, SUBMODULE_ALIASES["llama"]).values() for s in subs if s]
        raise LabError(f"module '{name}' is not one of the lab's hook points for a {model_type} model (a block itself, "
                       f"or its {', '.join(known)}): {FIX}")
    raise LabError(f"hook '{name}' is not a hook name the lab knows (TransformerLens blocks.L.hook_mlp_out, a module path "
                   f"such as layers.L.mlp, or mlp_out@L): {FIX}")


def module_path(model_type: str, hook: str, layer: int) -> str:
    """The module path sparsify names a hookpoint by (relative to the model's base model)."""
    fam = family(model_type)
    sub = SUBMODULE_ALIASES.get(fam, SUBMODULE_ALIASES["llama"])[hook][0]
    base = f"{BLOCK_LIST.get(fam, 'layers')}.{layer}"
    return f"{base}.{sub}" if sub else base


def transformer_lens_name(hook: str, layer: int) -> str:
    return f"blocks.{layer}.hook_{hook}"
