"""The architectures the lab can train, by name. Adding one is one module that calls ``register``.

Everything that offers or checks an architecture (config validation, sweep specs, the CLI help, the
app's picker, loading a saved SAE) asks this registry, so a new architecture needs no edit elsewhere.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from core.errors import LabError

if TYPE_CHECKING:
    from engine.training.architectures.base import Architecture

# The built-in architectures, in the order the app and error messages offer them, and the module of
# each. Naming them needs no torch (config validation and the CLI's parser run before any training).
BUILTIN: dict[str, str] = {"topk": "topk", "batchtopk": "batchtopk", "matryoshka_batchtopk": "matryoshka",
                           "jumprelu": "jumprelu", "relu": "relu"}

_REGISTRY: dict[str, type[Architecture]] = {}


def register(cls: type[Architecture]) -> type[Architecture]:
    """Class decorator: make ``cls`` selectable by ``cls.name`` (re-registering a name replaces it)."""
    if not cls.name or not cls.name.replace("_", "").isalnum():
        raise LabError(f"architecture name '{cls.name}' must be letters, digits and _: set the class's name")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    _load_builtins()
    return list(_REGISTRY)


def get(name: str) -> type[Architecture]:
    _load_builtins()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise LabError(f"unknown architecture '{name}': it must be one of {', '.join(_REGISTRY)}")
    return cls


def from_saelens(cfg_architecture: str, training_architecture: str | None = None) -> type[Architecture]:
    """The lab architecture that reproduces an SAE saved by SAELens (``cfg.json``'s architecture)."""
    _load_builtins()
    if training_architecture:
        for cls in _REGISTRY.values():
            if cls.saelens_training_architecture == training_architecture and cls.saelens_architecture == cfg_architecture:
                return cls
    for cls in _REGISTRY.values():
        if cls.saelens_architecture == cfg_architecture and cls.saelens_training_architecture in ("", cfg_architecture):
            return cls
    supported = sorted({c.saelens_architecture for c in _REGISTRY.values()})
    raise LabError(f"SAELens architecture '{cfg_architecture}' is not supported: the lab loads {', '.join(supported)}")


_loaded = False


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN.values():
        importlib.import_module(f"engine.training.architectures.{module}")
