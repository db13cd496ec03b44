"""SAE architectures: one module each, and the registry every other part of the lab reads."""

from engine.training.architectures.base import Architecture, StepStats
from engine.training.architectures.registry import from_saelens, get, names, register

__all__ = ["Architecture", "StepStats", "from_saelens", "get", "names", "register"]
