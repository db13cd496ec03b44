"""``python -m engine bench [train collect memory analysis app architectures ray sweep trainer]``: the benchmarks,
named explicitly.

The parser's arguments are defined here without loading torch (the engine's parser is built for
every command); ``run_bench`` imports the benchmarks themselves. The app's benchmark runs as its
own process (``python -m lab_app.bench``): the engine never imports the app.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from core.errors import LabError
from core.lab import Lab

DEFAULT = ["train", "collect", "memory"]


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="*", default=DEFAULT,
                   help="train, collect, memory (default: all three), analysis, app, architectures, ray, sweep, "
                        "trainer (fp32 vs bf16 steps and a share group against the torch.mm limit)")
    p.add_argument("--epochs", type=float, default=None,
                   help="training budget for the side-by-side (default: the default config's epochs)")
    p.add_argument("--collect-sequences", type=int, default=192, help="sequences per round in the collection comparison")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds for the collection comparison")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16-matmul contender in the training comparison")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--l0s", default="8,16,32", help="architectures bench: the L0 values compared (default 8,16,32)")
    p.add_argument("--seeds", default="0", help="architectures bench: comma-separated seeds, one side-by-side group each")
    p.add_argument("--archs", default=None, help="architectures bench: comma-separated subset of the registered architectures")
    p.add_argument("--extra-domain", action="append", default=[],
                   help="architectures bench: also compare on name=path texts (collected at the same site), "
                        "e.g. a code corpus with docstrings")
    p.add_argument("--fixed-coefficients", default=None,
                   help="architectures bench: also train JumpReLU and ReLU + L1 at these fixed sparsity coefficients "
                        "(target_l0 off), e.g. 0.1,1,10,100, to see how far the coefficient moves L0")
    p.add_argument("--ray-jobs", type=int, default=5, help="ray bench: jobs run on each side (default 5)")
    p.add_argument("--preset", default="everything", help="sweep bench: the sweep preset (or spec file) run from an empty lab")
    p.add_argument("--workers", type=int, default=2, help="sweep bench: worker processes (each gets cores / workers threads)")
    p.add_argument("--group-size", type=int, default=8, help="sweep bench: most jobs trained together in one pass (1: none)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="sweep bench: override the sweep's base settings, e.g. train.epochs=2")
    p.add_argument("--batches", default="2048,4096", help="trainer bench: the batch sizes fp32 and bf16 are compared at")
    p.add_argument("--group-ks", default="48,24,16", help="trainer bench: the k of each SAE of the share group trained in fp32")
    p.add_argument("--threads", type=int, default=None, help="trainer bench: torch threads (default: torch's, i.e. all cores)")
    p.add_argument("--bench-domains", default=None,
                   help="architectures bench: comma-separated subset of the default domains (default: all)")


def _default_lab(args) -> Lab:
    return Lab.at(args.lab) if getattr(args, "lab", None) else Lab.at(Path(tempfile.gettempdir()) / "sae-lab-bench")


def bench_app(args, lab: Lab, out: dict) -> None:
    """Every app page's render time (``python -m lab_app.bench``, in its own process; it prints its table)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "app.json"
        proc = subprocess.run([sys.executable, "-m", "lab_app.bench", "--lab", str(lab.root), "--json", str(result)],
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
            raise LabError(last.removeprefix("error: "))
        out["app"] = json.loads(result.read_text())


def run_bench(args) -> int:
    # deferred: the benchmarks load torch, the model and the whole pipeline; the parser above must not
    from torch import device

    from engine.analysis.bench import bench_analysis  # deferred: as above
    from engine.bench.architectures import bench_architectures  # deferred: as above
    from engine.bench.measure import bench_collect, bench_memory, bench_train, machine_description  # deferred: as above
    from engine.bench.ray_overhead import bench_ray  # deferred: as above (it imports Ray only when it runs)
    from engine.bench.sweep import bench_sweep  # deferred: as above
    from engine.bench.trainer import bench_trainer  # deferred: as above
    from engine.training.trainer import resolve_matmul_dtype  # deferred: as above

    benchmarks = {"train": bench_train, "collect": bench_collect, "memory": bench_memory,
                  "analysis": bench_analysis, "app": bench_app, "architectures": bench_architectures, "ray": bench_ray,
                  "sweep": bench_sweep, "trainer": bench_trainer}
    lab = _default_lab(args)
    out: dict = {"machine": machine_description()}
    print(f"machine: {out['machine']}")
    out["matmul_dtype_auto"] = str(resolve_matmul_dtype("auto", device("cpu"))).removeprefix("torch.")
    print(f"matmul dtype: train.matmul_dtype = auto resolves to {out['matmul_dtype_auto']} on this CPU")
    for what in args.what or DEFAULT:
        if what not in benchmarks:
            raise LabError(f"unknown benchmark '{what}': use {', '.join(benchmarks)}")
        benchmarks[what](args, lab, out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
    return 0
