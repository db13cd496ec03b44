"""SAELens folders: ``cfg.json`` + ``sae_weights.safetensors`` (sae_lens/saes/*.py, ``save_model`` and
``save_inference_model``; the layout the lab writes its own runs in).

Read as SAELens's inference classes compute them (sae_lens 6):

- ``standard``: ReLU(x' W_enc + b_enc), decoded f W_dec + b_dec;
- ``topk``: the k largest pre-activations, ReLU'd; with ``rescale_acts_by_decoder_norm`` the
  pre-activations are multiplied by each decoder row's norm and decoded through unit rows (folded);
- ``jumprelu``: ReLU(z) · 1{z > threshold}; BatchTopK and Matryoshka BatchTopK are saved in this form
  (``metadata.training_architecture``) with one threshold for every latent -> the lab's BatchTopK;
- ``batchtopk`` / ``matryoshka_batchtopk`` as training checkpoints save them (a scalar ``topk_threshold``),

where x' = x − b_dec when ``apply_b_dec_to_input`` (else x: folded into b_enc). Pre-6 configs
(``hook_point``, ``activation_fn_str = topk`` with ``activation_fn_kwargs.k``, a boolean
``normalize_activations``) are read the way SAELens's own ``handle_pre_6_0_config`` reads them.

``normalize_activations``: ``none``; ``expected_average_only_in`` multiplies inputs by one factor
(sqrt(d_in) / mean norm) and divides outputs by it: folded when the factor is known (the trainer's
``activation_scaler.json`` next to the weights, or ``--norm-scaling-factor``), refused otherwise —
SAELens's own trainer folds it before saving, so a folder still marked with it came from elsewhere and
its factor is needed; ``covariance_whitening`` is an affine map, folded from
``activation_whitening.safetensors``. ``constant_norm_rescale`` and ``layer_norm`` rescale every token
by its own norm; an SAE with a per-token input scale cannot be written as fixed weights, so they are
refused. Head-indexed (``hook_head_index``) and ``hook_z`` SAEs read activations the lab does not
record, and are refused too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import LabError
from engine.imports.source import (
    SourceSAE,
    check_shapes,
    fold_b_dec_into_b_enc,
    fold_decoder_norms,
    fold_scale,
    uniform_threshold,
)
from engine.imports.weights import load_safetensors, read_json_object, safetensors_shapes, sha256_of

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
SCALER, WHITENING = "activation_scaler.json", "activation_whitening.safetensors"
KNOWN = "standard, topk, jumprelu (with BatchTopK and Matryoshka BatchTopK saved as jumprelu), batchtopk, matryoshka_batchtopk"


def read_cfg(folder: Path) -> tuple[dict[str, Any], str]:
    return read_json_object(folder / CFG, "the folder needs its cfg.json next to the weights", "where the SAE was saved",
                            "the SAE's d_in, d_sae and architecture")


def _legacy(cfg: dict[str, Any]) -> dict[str, Any]:
    """SAELens < 6 wrote a flat config; read it as ``handle_pre_6_0_config`` does."""
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    version = str(cfg.get("sae_lens_version") or meta.get("sae_lens_version") or "")
    if version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 6:
        return cfg
    out = dict(cfg)
    if "hook_point" in out and "hook_name" not in out:
        out["hook_name"] = out["hook_point"]
    fn = out.get("activation_fn") or out.get("activation_fn_str")
    out.setdefault("architecture", "topk" if fn == "topk" else "standard")
    if fn == "topk" and (out.get("activation_fn_kwargs") or {}).get("k") is not None:
        out["architecture"], out["k"] = "topk", out["activation_fn_kwargs"]["k"]
    if isinstance(out.get("normalize_activations"), bool):
        out["normalize_activations"] = "expected_average_only_in" if out["normalize_activations"] else "none"
    return out


def read(folder: Path, norm_scaling_factor: float | None = None, fmt: str = "saelens",
         path_label: str | None = None) -> SourceSAE:
    folder = Path(folder)
    raw, text = read_cfg(folder)
    cfg = _legacy(raw)
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise LabError(f"{folder} has {CFG} but no {WEIGHTS}: copy the weights file next to it")
    arch_name = str(cfg.get("architecture") or "standard")
    training = meta.get("training_architecture") or cfg.get("training_architecture")
    if arch_name not in ("standard", "topk", "jumprelu", "batchtopk", "matryoshka_batchtopk"):
        raise LabError(f"{folder / CFG}: architecture '{arch_name}' is not one the lab can run (it imports {KNOWN}): "
                       "convert the SAE to one of those, or evaluate it with SAELens")
    if cfg.get("hook_head_index") is not None or meta.get("hook_head_index") is not None:
        raise LabError(f"{folder / CFG}: the SAE reads one attention head (hook_head_index), which the lab does not record: "
                       "the lab imports SAEs on whole mlp_out, attn_out or resid_post activations")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise LabError(f"{folder / CFG}: reshape_activations = '{cfg['reshape_activations']}' (per-head hook_z activations) "
                       "is not a hook the lab records: the lab imports SAEs on mlp_out, attn_out or resid_post")
    try:
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    except (KeyError, TypeError, ValueError):
        raise LabError(f"{folder / CFG} lacks whole numbers d_in and d_sae: it is not a SAELens config") from None
    safetensors_shapes(weights)  # a truncated file is named before anything is loaded
    sha = sha256_of(weights)
    tensors = load_safetensors(weights)
    notes: list[str] = []
    kept = {n: tensors[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec") if n in tensors}
    check_shapes(weights, kept, d_in, d_sae)  # before anything is folded
    k = cfg.get("k")
    details = meta.get("training_architecture_details") if isinstance(meta.get("training_architecture_details"), dict) else {}
    options: dict[str, Any] = {}
    if arch_name == "standard":
        arch = "relu"
    elif arch_name == "topk":
        arch = "topk"
        if cfg.get("rescale_acts_by_decoder_norm"):
            fold_decoder_norms(kept)
            notes.append("rescale_acts_by_decoder_norm: decoder row norms folded into the encoder (unit decoder rows)")
    else:
        if arch_name == "jumprelu":
            if "threshold" in tensors:
                threshold = tensors["threshold"].reshape(-1)
            elif "log_threshold" in tensors:
                threshold = tensors["log_threshold"].reshape(-1).exp()
                notes.append("log_threshold read as exp(log_threshold)")
            else:
                raise LabError(f"{weights} holds no threshold for its jumprelu architecture: the file is incomplete")
        else:  # a training checkpoint: one global threshold
            if "topk_threshold" not in tensors:
                raise LabError(f"{weights} holds no topk_threshold for its {arch_name} architecture: save it with "
                               "save_inference_model")
            threshold = tensors["topk_threshold"].reshape(-1)[:1].expand(d_sae).clone()
            training = arch_name
            if cfg.get("rescale_acts_by_decoder_norm"):  # the threshold is already in rescaled units
                fold_decoder_norms(kept)
                notes.append("rescale_acts_by_decoder_norm: decoder row norms folded into the encoder (unit decoder rows)")
        kept["threshold"] = threshold
        batch = training in ("batchtopk", "matryoshka_batchtopk") and uniform_threshold(threshold)
        arch = (training if training == "matryoshka_batchtopk" else "batchtopk") if batch else "jumprelu"
        if training in ("batchtopk", "matryoshka_batchtopk") and not batch:
            notes.append(f"trained as {training} but its thresholds differ per latent: read as JumpReLU")
        k = k if k is not None else details.get("k")
        widths = details.get("matryoshka_widths") or cfg.get("matryoshka_widths")
        if arch == "matryoshka_batchtopk" and widths:
            options["prefixes"] = _cumulative(list(widths), d_sae)
    k = k if k is not None else meta.get("k")  # the lab's own saves keep k (a target L0 for JumpReLU) in the metadata
    if not cfg.get("apply_b_dec_to_input", True):
        fold_b_dec_into_b_enc(kept)
        notes.append("apply_b_dec_to_input = false: b_dec @ W_enc folded into b_enc")
    _normalisation(cfg, folder, kept, notes, norm_scaling_factor)
    hook_name = meta.get("hook_name") or cfg.get("hook_name")
    return SourceSAE(
        format=fmt, path=path_label or str(folder.resolve()), weights_file=WEIGHTS, sha256=sha, config_text=text,
        architecture=arch, source_architecture=arch_name + (f"/{training}" if training and training != arch_name else ""),
        d_in=d_in, d_sae=d_sae, tensors=kept, k=int(k) if isinstance(k, (int, float)) and k else None,
        hook_name=str(hook_name) if hook_name else None, layer_hint=_int(meta.get("hook_layer", cfg.get("hook_layer"))),
        model_name=meta.get("model_name") or cfg.get("model_name"), options=options, notes=notes,
    ).check()


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _cumulative(widths: list[int], d_sae: int) -> list[int]:
    """Matryoshka prefix widths, cumulative (the lab's form) whether the source listed them cumulatively or as group sizes."""
    ws = [int(w) for w in widths]
    if all(a < b for a, b in zip(ws, ws[1:])) and ws[-1] == d_sae:
        return ws
    out, total = [], 0
    for w in ws:
        total += w
        out.append(total)
    return out if out and out[-1] == d_sae else []


def _normalisation(cfg: dict[str, Any], folder: Path, tensors: dict, notes: list[str], factor: float | None) -> None:
    mode = cfg.get("normalize_activations") or "none"
    if mode == "none":
        return
    if mode == "expected_average_only_in":
        source = "--norm-scaling-factor"
        if factor is None and (folder / SCALER).is_file():
            try:
                factor = json.loads((folder / SCALER).read_text()).get("scaling_factor")
                source = SCALER
            except (OSError, ValueError, AttributeError):
                raise LabError(f"{folder / SCALER} is not readable JSON: copy it again from the training run") from None
        if factor is None:
            raise LabError(f"{folder / CFG}: normalize_activations = expected_average_only_in, but the scaling factor it was "
                           f"trained with is not in the folder ({SCALER}): pass --norm-scaling-factor F (SAELens's "
                           "sqrt(d_in) / mean activation norm for this SAE, from its release notes or training run)")
        if not (isinstance(factor, (int, float)) and factor > 0):
            raise LabError(f"scaling factor {factor} ({source}) must be a positive number")
        fold_scale(tensors, float(factor))
        notes.append(f"normalize_activations = expected_average_only_in: scaling factor {float(factor):.6g} ({source}) folded "
                     "into the weights")
        return
    if mode == "covariance_whitening" and (folder / WHITENING).is_file():
        w = load_safetensors(folder / WHITENING)
        try:
            mean, m, m_inv = w["mean"].double(), w["matrix"].double(), w["inverse_matrix"].double()
        except KeyError:
            raise LabError(f"{folder / WHITENING} lacks mean, matrix or inverse_matrix: copy it again") from None
        tensors["W_enc"] = (m @ tensors["W_enc"].double()).float()
        tensors["W_dec"] = (tensors["W_dec"].double() @ m_inv).float()
        tensors["b_dec"] = (tensors["b_dec"].double() @ m_inv + mean).float()
        notes.append(f"normalize_activations = covariance_whitening: the whitening in {WHITENING} folded into the weights")
        return
    raise LabError(f"{folder / CFG}: normalize_activations = '{mode}' rescales each token by its own statistics, which fixed "
                   "SAE weights cannot reproduce: the lab imports SAEs with normalize_activations none, "
                   "expected_average_only_in (with its factor) or covariance_whitening (with its statistics)")
