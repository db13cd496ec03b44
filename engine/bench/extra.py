"""Benchmarks added by later parts of the lab (analysis, app)."""

from __future__ import annotations

from engine.errors import LabError

REGISTRY: dict = {}


def run(what: str, args, lab, out: dict) -> None:
    if what not in REGISTRY:
        raise LabError(f"unknown benchmark '{what}': use train, collect, memory{''.join(', ' + k for k in REGISTRY)}")
    REGISTRY[what](args, lab, out)
