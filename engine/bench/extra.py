"""Benchmarks added by later parts of the lab (analysis, app)."""

from __future__ import annotations

from core.errors import LabError

REGISTRY: dict = {}


def run(what: str, args, lab, out: dict) -> None:
    if what == "app" and "app" not in REGISTRY:  # the app's benchmark lives with the app (imported on demand)
        from lab_app.bench import bench_app

        REGISTRY["app"] = bench_app
    if what not in REGISTRY:
        raise LabError(f"unknown benchmark '{what}': use train, collect, memory{''.join(', ' + k for k in REGISTRY)}")
    REGISTRY[what](args, lab, out)
