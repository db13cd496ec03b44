"""Any lab run as a dictionary_learning, sparsify or SAELens folder, in each project's own layout.

The weights come from the run's saved SAE (``sae/``, SAELens's layout with the input scale folded in,
so every export works on raw activations); the layouts are the ones the readers in this package
read (dictionary_learning.py, sparsify.py, saelens.py), so export -> import gives the same SAE:

- ``saelens``: the run's own ``cfg.json`` + ``sae_weights.safetensors``, with ``metadata.hook_name`` in
  TransformerLens form (``blocks.2.hook_mlp_out``) so SAELens and other tools know the hook;
- ``sparsify``: ``<hookpoint>/cfg.json`` + ``<hookpoint>/sae.safetensors`` and the run's ``config.json``;
  the hookpoint is the module path sparsify would name (``encoder.layer.2.output.dense`` for the bundled
  BERT model's mlp_out at layer 2). sparsify runs TopK only, so other architectures are refused;
- ``dictionary_learning``: ``ae.pt`` (the state dict of the matching dictionary class) + ``config.json``
  (``{"trainer": {...}, "buffer": {...}}``); ReLU runs as ``AutoEncoder`` (decoder columns normalised,
  as its ``from_pretrained`` would), TopK as ``AutoEncoderTopK``, BatchTopK as ``BatchTopKSAE``,
  Matryoshka as ``MatryoshkaBatchTopKSAE``, JumpReLU as ``JumpReluAutoEncoder`` (which encodes x, not
  x − b_dec: b_dec W_enc is taken out of b_enc).

The folder is written under a temporary name and renamed when complete; an existing non-empty folder
is refused rather than overwritten.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from core.errors import LabError, writing_to
from core.lab import Lab
from engine.artifacts import load_run
from engine.imports import hook_names
from engine.imports.source import fold_decoder_norms

FORMATS = ("dictionary_learning", "sparsify", "saelens")
DL_CLASSES = {"relu": ("AutoEncoder", "StandardTrainer"), "topk": ("AutoEncoderTopK", "TopKTrainer"),
              "batchtopk": ("BatchTopKSAE", "BatchTopKTrainer"),
              "matryoshka_batchtopk": ("MatryoshkaBatchTopKSAE", "MatryoshkaBatchTopKTrainer"),
              "jumprelu": ("JumpReluAutoEncoder", "JumpReluTrainer")}


def export_run(lab: Lab, run_id: str, fmt: str, out: str | Path) -> Path:
    """Write run ``run_id`` to folder ``out`` in format ``fmt``; returns the folder written."""
    if fmt not in FORMATS:
        raise LabError(f"unknown export format '{fmt}': use one of {', '.join(FORMATS)}")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LabError(f"{out} already exists and is not an empty folder: export to a new folder")
    run = load_run(lab, run_id, "cpu")
    sae, config = run.sae, run.config
    assert sae is not None
    if fmt == "sparsify" and sae.architecture != "topk":
        raise LabError(f"run {run_id} is {sae.architecture}; sparsify holds TopK sparse coders only: export it as saelens or "
                       "dictionary_learning")
    tensors = sae.folded_tensors()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with writing_to(tmp):
            if fmt == "saelens":
                _saelens(lab, run_id, config, tmp)
            elif fmt == "sparsify":
                _sparsify(run_id, run.resolved, config, sae, tensors, tmp)
            else:
                _dictionary_learning(run_id, config, sae, tensors, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out


def _lab_note(run_id: str, config) -> dict[str, Any]:
    return {"run_id": run_id, "model": config.model, "hook": config.hook, "layer": config.layer,
            "architecture": config.sae.architecture}


def _saelens(lab: Lab, run_id: str, config, folder: Path) -> None:
    src = lab.run_dir(run_id) / "sae"
    cfg = json.loads((src / "cfg.json").read_text())
    meta = cfg.setdefault("metadata", {})
    meta["lab_hook"] = meta.get("hook_name")
    meta["hook_name"] = hook_names.transformer_lens_name(config.hook, config.layer)
    meta["hook_layer"] = config.layer
    shutil.copyfile(src / "sae_weights.safetensors", folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=2))


def _sparsify(run_id: str, resolved: dict, config, sae, t: dict[str, torch.Tensor], folder: Path) -> None:
    point = hook_names.module_path(str((resolved.get("model") or {}).get("model_type", "")), config.hook, config.layer)
    sub = folder / point
    sub.mkdir()
    save_file({"encoder.weight": t["W_enc"].t().contiguous(), "encoder.bias": t["b_enc"].contiguous(),
               "W_dec": t["W_dec"].contiguous(), "b_dec": t["b_dec"].contiguous()}, str(sub / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": max(1, sae.d_sae // sae.d_in), "normalize_decoder": False,
           "num_latents": sae.d_sae, "k": sae.k, "multi_topk": False, "skip_connection": False, "transcode": False,
           "d_in": sae.d_in}
    (sub / "cfg.json").write_text(json.dumps(cfg))
    run_cfg = {"sae": {k: v for k, v in cfg.items() if k != "d_in"}, "hookpoints": [point], "model": config.model,
               "ctx_len": config.data.seq_len, "lab": _lab_note(run_id, config)}
    (folder / "config.json").write_text(json.dumps(run_cfg, indent=2))


def _dictionary_learning(run_id: str, config, sae, t: dict[str, torch.Tensor], folder: Path) -> None:
    arch = sae.architecture
    if arch not in DL_CLASSES:
        raise LabError(f"run {run_id}'s architecture {arch} has no dictionary_learning counterpart: export it as saelens")
    dict_class, trainer_class = DL_CLASSES[arch]
    t = dict(t)
    if arch == "relu":
        fold_decoder_norms(t)  # AutoEncoder.from_pretrained normalises the decoder: write it normalised already
        state = {"bias": t["b_dec"], "encoder.weight": t["W_enc"].t().contiguous(), "encoder.bias": t["b_enc"],
                 "decoder.weight": t["W_dec"].t().contiguous()}
    elif arch in ("topk", "batchtopk"):
        threshold = float(t["threshold"][0]) if arch == "batchtopk" else -1.0
        state = {"k": torch.tensor(sae.k, dtype=torch.int), "threshold": torch.tensor(threshold, dtype=torch.float32),
                 "decoder.weight": t["W_dec"].t().contiguous(), "encoder.weight": t["W_enc"].t().contiguous(),
                 "encoder.bias": t["b_enc"], "b_dec": t["b_dec"]}
    elif arch == "matryoshka_batchtopk":
        widths = list(sae.arch.widths)
        sizes = [b - a for a, b in zip([0] + widths[:-1], widths)]
        state = {"k": torch.tensor(sae.k, dtype=torch.int), "threshold": torch.tensor(float(t["threshold"][0])),
                 "group_sizes": torch.tensor(sizes), "W_enc": t["W_enc"], "b_enc": t["b_enc"], "W_dec": t["W_dec"],
                 "b_dec": t["b_dec"]}
    else:  # jumprelu: JumpReluAutoEncoder encodes x @ W_enc + b_enc, without subtracting b_dec
        b_enc = (t["b_enc"].double() - t["b_dec"].double() @ t["W_enc"].double()).float()
        state = {"W_enc": t["W_enc"], "b_enc": b_enc, "W_dec": t["W_dec"], "b_dec": t["b_dec"], "threshold": t["threshold"]}
    torch.save({k: v.contiguous() for k, v in state.items()}, folder / "ae.pt")
    trainer = {"trainer_class": trainer_class, "dict_class": dict_class, "activation_dim": sae.d_in, "dict_size": sae.d_sae,
               "layer": config.layer, "lm_name": config.model, "submodule_name": f"{config.hook}_layer{config.layer}"}
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        trainer["k"] = sae.k
    if arch == "matryoshka_batchtopk":
        trainer["group_sizes"] = [int(v) for v in state["group_sizes"]]
    if arch == "jumprelu":
        trainer["target_l0"] = sae.k
    cfg = {"trainer": trainer, "buffer": {"ctx_len": config.data.seq_len}, "lab": _lab_note(run_id, config)}
    (folder / "config.json").write_text(json.dumps(cfg, indent=4))
