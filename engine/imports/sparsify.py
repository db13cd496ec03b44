"""EleutherAI sparsify folders: one sub-folder per hookpoint, each ``cfg.json`` + ``sae.safetensors``, and the
run's ``config.json`` next to them (sparsify/sparse_coder.py ``save_to_disk`` / ``load_from_disk``,
sparsify/trainer.py ``_checkpoint``, sparsify/config.py ``SparseCoderConfig``).

The sub-folder's name is the hookpoint: a module path under the model's base model (``layers.2``,
``layers.2.mlp``, ``gpt_neox.layers.2.mlp``, ``encoder.layer.2.output.dense``), the SAE reading that
module's output. ``sae.safetensors`` holds ``encoder.weight [num_latents, d_in]``, ``encoder.bias``,
``W_dec [num_latents, d_in]``, ``b_dec [d_in]`` (and ``W_skip`` with a skip connection); ``cfg.json``
holds the ``SparseCoderConfig`` fields plus ``d_in``. Encoding (``fused_encoder``) is
ReLU((x − b_dec) Wᵀ + b) and the k largest of those; decoding top_acts · W_dec + b_dec: the lab's TopK
exactly (the order of ReLU and top-k does not change the values kept). ``groupmax`` activations,
skip connections and transcoders compute something a plain SAE does not, and are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import LabError
from engine.imports.source import SourceSAE, check_shapes
from engine.imports.weights import load_safetensors, read_json_object, safetensors_shapes, sha256_of

CFG, WEIGHTS, RUN_CONFIG = "cfg.json", "sae.safetensors", "config.json"


def is_hookpoint(folder: Path) -> bool:
    return (folder / CFG).is_file() and (folder / WEIGHTS).is_file()


def hookpoints(folder: Path) -> list[Path]:
    """The hookpoint sub-folders of a sparsify run folder, in name order."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and is_hookpoint(p)), key=lambda p: p.name)


def read(folder: Path) -> SourceSAE:
    """One hookpoint folder."""
    folder = Path(folder)
    path = folder / CFG
    cfg, text = read_json_object(path, "a sparsify hookpoint folder needs its cfg.json", "the sparsify run",
                                 "the sparse coder's d_in, k and num_latents")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise LabError(f"{folder} has {CFG} but no {WEIGHTS}: copy the weights file next to it")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise LabError(f"{path}: activation '{activation}' is not one the lab can run (sparsify's topk is): "
                       "import a topk sparse coder")
    if cfg.get("transcode"):
        raise LabError(f"{path} describes a transcoder (it predicts a module's output from its input): the lab imports "
                       "sparse autoencoders, which reconstruct the activation they read")
    if cfg.get("skip_connection") or cfg.get("embed_skip") or cfg.get("gram_lookup"):
        raise LabError(f"{path}: a skip connection or lookup table adds to the reconstruction what a plain SAE cannot: "
                       "the lab imports sparse coders without skip_connection, embed_skip or gram_lookup")
    try:
        d_in, k = int(cfg["d_in"]), int(cfg.get("k", 32))
        d_sae = int(cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor", 32)))
    except (KeyError, TypeError, ValueError):
        raise LabError(f"{path} lacks whole numbers d_in and k: it is not a sparsify cfg.json") from None
    shapes = safetensors_shapes(weights)
    if "W_skip" in shapes:
        raise LabError(f"{weights} holds a skip connection (W_skip): the lab imports sparse coders without one")
    sha = sha256_of(weights)
    t = load_safetensors(weights)
    try:
        tensors = {"W_enc": t["encoder.weight"].t().contiguous(), "b_enc": t["encoder.bias"],
                   "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    except KeyError as e:
        raise LabError(f"{weights} has no {e}: a sparsify sae.safetensors holds encoder.weight, encoder.bias, W_dec and "
                       "b_dec") from None
    check_shapes(weights, tensors, d_in, d_sae)
    run_cfg = _run_config(folder.parent / RUN_CONFIG)
    return SourceSAE(
        format="sparsify", path=str(folder.resolve()), weights_file=WEIGHTS, sha256=sha, config_text=text,
        architecture="topk", source_architecture="sparsify topk", d_in=d_in, d_sae=d_sae, tensors=tensors, k=k,
        hook_name=folder.name, model_name=run_cfg.get("model"),
    ).check()


def _run_config(path: Path) -> dict:
    """The run's config.json (sparsify's RunConfig: the model's name among others), when it is there."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        return cfg if isinstance(cfg, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
