"""dictionary_learning folders: ``ae.pt`` (the dictionary's state dict) + ``config.json`` (``{"trainer": {...},
"buffer": {...}}``), as dictionary_learning/training.py ``trainSAE`` saves them and utils.py
``load_dictionary`` reads them back (by ``trainer.dict_class``).

The dictionaries, from dictionary_learning/dictionary.py and trainers/*.py:

- ``AutoEncoder`` (standard): ReLU(encoder(x − bias)), decoded decoder(f) + bias; tensors ``bias``,
  ``encoder.weight [d_sae, d_in]``, ``encoder.bias``, ``decoder.weight [d_in, d_sae]``. Its
  ``from_pretrained`` normalises the decoder's columns (folding the norms into the encoder), so the lab
  does too: the same feature activations a dictionary_learning user sees;
- ``AutoEncoderNew`` (April update): ReLU(encoder(x)), decoder(f) with the decoder's own bias;
- ``AutoEncoderTopK``: ReLU(encoder(x − b_dec)), the k largest per token (buffer ``k``); its
  ``threshold`` buffer is only used on request and is ignored, as dictionary_learning's default does;
- ``BatchTopKSAE``: ReLU(encoder(x − b_dec)) kept above one global ``threshold`` (the lab's BatchTopK);
- ``MatryoshkaBatchTopKSAE``: the same with ``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec``, ``b_dec``
  parameters and ``group_sizes`` (the lab's Matryoshka BatchTopK, prefixes = cumulative group sizes);
- ``JumpReluAutoEncoder``: ReLU(z · 1{z > threshold}) with z = x W_enc + b_enc — it does not subtract
  b_dec (``apply_b_dec_to_input = False``), so b_dec W_enc is folded into b_enc.

Scaling: with ``normalize_activations`` the trainer scales the biases by the norm factor before the
final save, so a finished ``ae.pt`` works on raw activations as it is. A trainer backup (``ae.pt``
holding ``{"ae": state, "norm_factor": f, ...}``, written while training ran) is not scaled yet: the
lab applies ``scale_biases(f)`` itself. Gated dictionaries are refused (no plain SAE computes them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from core.errors import LabError
from engine.imports.source import SourceSAE, check_shapes, fold_b_dec_into_b_enc, fold_decoder_norms
from engine.imports.weights import load_torch_state, sha256_of

WEIGHTS, CONFIG = "ae.pt", "config.json"
LAB_ARCH = {"AutoEncoder": "relu", "AutoEncoderNew": "relu", "AutoEncoderTopK": "topk", "BatchTopKSAE": "batchtopk",
            "MatryoshkaBatchTopKSAE": "matryoshka_batchtopk", "JumpReluAutoEncoder": "jumprelu"}
HOOK_IN_PATH = re.compile(r"^(mlp_out|attn_out|resid_out|resid_post|resid)_?(?:layer)?_?(\d+)$")


def read(folder: Path) -> SourceSAE:
    folder = Path(folder)
    cfg_path = folder / CONFIG
    try:
        text = cfg_path.read_text(encoding="utf-8")
        cfg = json.loads(text)
    except OSError as e:
        raise LabError(f"cannot read {cfg_path} ({e.strerror or e}): a dictionary_learning folder holds ae.pt and the "
                       "config.json its trainer wrote") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabError(f"{cfg_path} is not valid JSON ({e}): copy it again from the training run") from None
    trainer = cfg.get("trainer") if isinstance(cfg, dict) else None
    if not isinstance(trainer, dict) or "dict_class" not in trainer:
        raise LabError(f"{cfg_path} has no trainer.dict_class: it is not a dictionary_learning config.json")
    dict_class = str(trainer["dict_class"])
    if dict_class not in LAB_ARCH:
        raise LabError(f"{cfg_path}: dictionary class '{dict_class}' is not one the lab can run (it imports "
                       f"{', '.join(LAB_ARCH)}): evaluate it with dictionary_learning")
    weights = folder / WEIGHTS
    state = load_torch_state(weights)
    sha = sha256_of(weights)
    notes: list[str] = []
    norm_factor = None
    if isinstance(state.get("ae"), dict):  # the trainer's backup, written while training ran
        norm_factor, step = state.get("norm_factor"), _plain(state.get("step"))
        state = state["ae"]
        notes.append(f"ae.pt is a trainer backup (step {step}): its state dict was read")
    tensors, arch, k, options = _convert(dict_class, state, weights, trainer, notes)
    if norm_factor:
        f = float(norm_factor)
        tensors["b_enc"], tensors["b_dec"] = tensors["b_enc"] * f, tensors["b_dec"] * f
        if "threshold" in tensors and bool((tensors["threshold"] >= 0).all()):
            tensors["threshold"] = tensors["threshold"] * f
        notes.append(f"norm_factor {f:.6g} applied to the biases (scale_biases), as the trainer does before its final save")
    d_sae, d_in = tensors["W_dec"].shape
    return SourceSAE(
        format="dictionary_learning", path=str(folder.resolve()), weights_file=WEIGHTS, sha256=sha, config_text=text,
        architecture=arch, source_architecture=dict_class, d_in=int(d_in), d_sae=int(d_sae), tensors=tensors, k=k,
        hook_name=_hook_name(trainer, folder), layer_hint=_int(trainer.get("layer")), model_name=trainer.get("lm_name"),
        options=options, notes=notes,
    ).check()


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v


def _int(v: Any) -> int | None:
    try:
        return int(_plain(v)) if v is not None else None
    except (TypeError, ValueError):
        return None


def _tensor(state: dict, name: str, weights: Path) -> torch.Tensor:
    t = state.get(name)
    if not isinstance(t, torch.Tensor):
        raise LabError(f"{weights} has no tensor '{name}': it does not hold the dictionary its config.json names")
    return t.float()


def _convert(dict_class: str, state: dict, weights: Path, trainer: dict, notes: list[str]):
    """(SAELens-layout tensors, lab architecture, k, options) from one dictionary's state dict."""
    arch, options = LAB_ARCH[dict_class], {}
    k = _int(state.get("k")) or _int(trainer.get("k"))
    if dict_class in ("MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder"):  # nn.Parameters in SAELens's layout
        t = {n: _tensor(state, n, weights) for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    else:
        t = {"W_enc": _tensor(state, "encoder.weight", weights).t().contiguous(),
             "W_dec": _tensor(state, "decoder.weight", weights).t().contiguous()}
        t["b_enc"] = _tensor(state, "encoder.bias", weights)
        if dict_class == "AutoEncoder":
            t["b_dec"] = _tensor(state, "bias", weights)
        elif dict_class == "AutoEncoderNew":
            t["b_dec"] = _tensor(state, "decoder.bias", weights)
        else:
            t["b_dec"] = _tensor(state, "b_dec", weights)
    if t["W_dec"].dim() != 2:
        raise LabError(f"{weights}: the decoder is {t['W_dec'].dim()}-dimensional, not a [d_sae, d_in] matrix: the file is "
                       "not the dictionary its config.json names")
    d_sae, d_in = t["W_dec"].shape
    check_shapes(weights, t, int(d_in), int(d_sae))
    if dict_class == "AutoEncoderNew":
        fold_b_dec_into_b_enc(t)
        notes.append("AutoEncoderNew encodes x, not x - b: the decoder bias folded into the encoder bias")
    if dict_class == "AutoEncoder":
        n = t["W_dec"].norm(dim=1)
        if not torch.allclose(n, torch.ones_like(n)):
            fold_decoder_norms(t)
            notes.append("decoder columns normalised, norms folded into the encoder (AutoEncoder.from_pretrained's default)")
    if dict_class in ("BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
        th = float(_tensor(state, "threshold", weights).reshape(-1)[0])
        t["threshold"] = torch.full((int(d_sae),), th)
        if th < 0:
            notes.append(f"threshold {th} was never calibrated: every positive pre-activation is kept, as its encode does")
    if dict_class == "MatryoshkaBatchTopKSAE" and isinstance(state.get("group_sizes"), torch.Tensor):
        options["prefixes"] = [int(v) for v in torch.cumsum(state["group_sizes"].reshape(-1), 0)]
    if dict_class == "JumpReluAutoEncoder":
        t["threshold"] = _tensor(state, "threshold", weights).reshape(-1)
        fold_b_dec_into_b_enc(t)
        notes.append("JumpReluAutoEncoder encodes x, not x - b_dec: b_dec @ W_enc folded into b_enc")
        k = _int(trainer.get("target_l0"))
    if dict_class in ("AutoEncoder", "AutoEncoderNew"):
        k = None
    return t, arch, k, options


def _hook_name(trainer: dict, folder: Path) -> str | None:
    """The trainer's submodule_name, else a released dictionary's folder name (``mlp_out_layer1``) in the path."""
    name = trainer.get("submodule_name")
    if name:
        return str(name)
    for part in [folder.name, *[p.name for p in folder.parents][:3]]:
        if HOOK_IN_PATH.match(part) or part == "embed":  # "embed" is refused by name: embeddings are no lab hook point
            return part
    return None
