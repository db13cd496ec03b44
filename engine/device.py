"""Device choice: CUDA, then Apple MPS, then CPU, unless the user names one."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

import torch

from core.errors import LabError

THREADS_ENV = "SAE_LAB_THREADS"


def cpu_threads() -> int:
    """The torch threads a lab process may use: all cores, or ``SAE_LAB_THREADS`` where it is set.

    On a machine shared with other CPU-bound work (a test suite's parallel workers, two sweeps),
    each extra OpenMP thread mostly waits on a busy core: a test worker with two threads ran its jobs
    5× slower than with one. Setting the variable caps every lab process it reaches, collection
    included (which otherwise takes every core)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            wanted = int(raw)
        except ValueError:
            raise LabError(f"{THREADS_ENV} = {raw!r} is not a whole number: set it to e.g. 1, or unset it") from None
        if wanted < 1:
            raise LabError(f"{THREADS_ENV} = {wanted} must be at least 1: set it to e.g. 1, or unset it")
        return wanted
    return os.cpu_count() or 1


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


def release_freed_memory() -> bool:
    """Hand the memory a finished job freed back to the system (glibc's ``malloc_trim``).

    A job's analysis frees hundreds of MB of numpy temporaries, but glibc keeps freed heap pages
    resident (it returns only the heap's top), so a worker's resident size would stay at its
    largest job's high-water mark through the jobs after it, beside the other worker's. Returns
    whether anything was trimmed; a no-op where the C library is not glibc."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        trim = None
    return bool(trim(0)) if trim is not None else False
