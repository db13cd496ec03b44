"""Reading weights files from elsewhere: safetensors (SAELens, sparsify) and ``ae.pt`` (dictionary_learning).

Why not just ``load_file`` / ``torch.load``: a file copied halfway, cut by a full disk or simply not a
weights file fails deep inside those with a message about byte offsets or pickle opcodes. The header
of a safetensors file says exactly how many bytes of tensors follow, so a truncated file is named as
such before anything is loaded; every other failure becomes one line naming the file and the fix.
``ae.pt`` is read with ``torch.load(weights_only=True)``: a checkpoint from elsewhere must not run
code when it is opened. The sha256 of the file's bytes is the import's content hash (the same file
imported twice is one run).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch

from core.errors import LabError, first_line

FIX = "copy the file again from where the SAE was trained (or re-save it there)"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header, after checking the file holds every byte it announces."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise LabError(f"{path} is truncated ({size} bytes, not even a safetensors header): {FIX}")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise LabError(f"{path} is truncated or not safetensors: its header announces {n:,} bytes of metadata, "
                               f"the file holds {size - 8:,}: {FIX}")
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        raise LabError(f"cannot read {path} ({first_line(e)}): check the path and its permissions") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LabError(f"{path} is not a safetensors file (its header is not JSON): {FIX}") from None
    if not isinstance(header, dict):
        raise LabError(f"{path} is not a safetensors file (its header is not a JSON object): {FIX}")
    shapes, end = {}, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(v) for v in info["data_offsets"])
            shapes[name] = [int(d) for d in info["shape"]]
        except (KeyError, TypeError, ValueError):
            raise LabError(f"{path} is not a safetensors file (entry '{name}' has no shape and offsets): {FIX}") from None
        end = max(end, stop, begin)
    if 8 + n + end > size:
        raise LabError(f"{path} is truncated: its header announces {end:,} bytes of tensors, the file holds {size - 8 - n:,}: "
                       f"{FIX}")
    return shapes


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as float32 on the CPU (a damaged file -> one LabError)."""
    # deferred: safetensors' torch bindings are only needed once a file is really read
    from safetensors.torch import load_file

    if not path.is_file():
        raise LabError(f"{path} does not exist: the folder has no weights to import")
    safetensors_shapes(path)
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors' own error for a garbled file the header check let through
        raise LabError(f"cannot read {path} ({first_line(e)}): the file is damaged or not safetensors: {FIX}") from None
    return {k: v.float() for k, v in tensors.items()}


def load_torch_state(path: Path) -> dict:
    """A dictionary_learning ``ae.pt`` (a state dict, or the trainer's backup dict holding one) without running its code."""
    if not path.is_file():
        raise LabError(f"{path} does not exist: the folder has no weights to import")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a pickle with code in it, not a torch file at all
        raise LabError(f"cannot read {path} ({first_line(e)[:200]}): it is damaged, not a PyTorch state dict, or holds "
                       f"code the lab will not run: {FIX}") from None
    if not isinstance(obj, dict):
        raise LabError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors: save the dictionary's state_dict()")
    return obj


def check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise LabError(f"{path} holds NaN or infinite values in '{name}': the SAE diverged while training; import a "
                           "checkpoint from before that")


def read_json_object(path: Path, missing: str, recopy_from: str, holds: str) -> tuple[dict, str]:
    """A source's JSON config and its verbatim text (kept as provenance), or one line naming the fix:
    ``missing`` says what the folder needs, ``recopy_from`` where a good copy is, ``holds`` what it holds."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        cfg = json.loads(text)
    except OSError as e:
        raise LabError(f"cannot read {path} ({e.strerror or e}): {missing}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabError(f"{path} is not valid JSON ({e}): copy it again from {recopy_from}") from None
    if not isinstance(cfg, dict):
        raise LabError(f"{path} is not a JSON object: it should hold {holds}")
    return cfg, text
