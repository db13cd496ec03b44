"""Device choice: CUDA, then Apple MPS, then CPU, unless the user names one."""

from __future__ import annotations

import torch

from core.errors import LabError


def pick_device(preference: str = "auto") -> torch.device:
    pref = (preference or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise LabError(f"device '{preference}' requested but CUDA is not available: use --device cpu or auto")
    if pref == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LabError("device 'mps' requested but Apple MPS is not available: use --device cpu or auto")
    if pref not in ("cpu", "mps") and not pref.startswith("cuda"):
        raise LabError(f"unknown device '{preference}': use auto, cpu, cuda or mps")
    return torch.device(pref)


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls only pay off with native support (AMX or AVX512-BF16); elsewhere they are slower."""
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return any(f in flags for f in (" amx_bf16", " avx512_bf16"))
