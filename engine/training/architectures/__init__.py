"""SAE architectures: one module each, and the registry every other part of the lab reads.

Names resolve on first use (PEP 562): the registry's list of built-ins is read by config validation
and the CLI without loading torch, which the architecture modules need.
"""

from importlib import import_module
from typing import Any

_HOME = {"Architecture": "base", "Calibration": "base", "StepStats": "base",
         "from_saelens": "registry", "get": "registry", "names": "registry", "register": "registry"}

__all__ = ["Architecture", "Calibration", "StepStats", "from_saelens", "get", "names", "register"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'engine.training.architectures' has no attribute '{name}'")
    return getattr(import_module(f"engine.training.architectures.{_HOME[name]}"), name)
