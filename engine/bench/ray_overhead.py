"""``python -m engine bench ray``: what running a job as a Ray task costs over the local worker.

The same small jobs, one at a time on each side (1 CPU, 1 thread, no analysis), interleaved job by
job -- a local worker's job, then the Ray driver's -- so the machine's drift from minute to minute
(a shared VM) falls on both. Activations are collected once beforehand and shared, so neither side
collects. A job's time is its row's ``claimed_at`` to ``finished_at``: for the local worker,
training and recording it; for Ray, also submitting the task, setting up its scratch lab, sending
the rows and files back and landing them. The Ray runtime's start (once per driver) and the first
job's worker process (it imports torch and the engine) are reported apart from the steady state.

Ray is imported only when this benchmark runs.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from core.lab import Lab
from db import ensure_schema, query_rows
from engine.artifacts import collect_for
from engine.sweeps.queue import enqueue_sweep
from engine.sweeps.spec import SweepSpec, expand
from engine.sweeps.worker import Worker

JOB = {"data": {"tokens_per_domain": 20_000, "layers": [2]}, "layer": 2, "train_domains": ["prose"],
       "sae": {"d_sae": 512, "k": 16}, "train": {"epochs": 2, "batch_size": 256}, "eval": {"splice_sequences": 4}}
SPEC = {"name": "bench-ray", "parameters": {"k": [16]}, "base": JOB}  # one job; enqueued again for each round


def _job_seconds(lab: Lab) -> list[float]:
    rows = query_rows(lab, "SELECT epoch(finished_at) - epoch(claimed_at) FROM jobs WHERE status = 'FINISHED' ORDER BY seq")
    return [float(r[0]) for r in rows]


def bench_ray(args, lab: Lab, out: dict) -> None:
    # deferred: Ray is imported only when its benchmark runs (import_ray says how to install it)
    from engine.sweeps.ray_runtime import import_ray

    import_ray()
    # deferred: as above (the driver imports ray)
    from engine.sweeps.ray_driver import RayDriver
    from engine.sweeps.ray_runtime import lab_key, node_folder  # deferred: as above

    n = max(2, int(args.ray_jobs))
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        local, on_ray = Lab.at(Path(tmp) / "local"), Lab.at(Path(tmp) / "ray")
        for one in (local, on_ray):
            ensure_schema(one)
        spec = SweepSpec.from_dict(SPEC)
        collect_for(expand(spec)[0], local, not args.quiet)
        on_ray.activations.symlink_to(local.activations.resolve(), target_is_directory=True)  # nobody collects again
        worker = Worker(local, threads=1, analysis=False, niceness=0, log=lambda _: None)
        driver = RayDriver(on_ray, threads=1, analysis=False, niceness=0, num_cpus=1, log=lambda _: None)
        t0 = time.perf_counter()
        try:
            with driver.session():
                startup = time.perf_counter() - t0
                for _ in range(n):
                    enqueue_sweep(local, spec)
                    worker.run(max_jobs=1)
                    enqueue_sweep(on_ray, spec)
                    driver.drain()
        finally:
            torch.set_num_threads(threads)
            shutil.rmtree(node_folder(lab_key(on_ray)), ignore_errors=True)  # the runtime's logs, the scratch labs
        a, b = _job_seconds(local), _job_seconds(on_ray)
    if len(a) != n or len(b) != n:
        raise RuntimeError(f"bench ray: {len(a)} local and {len(b)} Ray jobs finished of {n} each")
    steady_a, steady_b = statistics.median(a[1:]), statistics.median(b[1:])
    overhead = steady_b - steady_a
    res = {"jobs": n, "job": JOB, "local_seconds_per_job": steady_a, "ray_seconds_per_job": steady_b,
           "overhead_seconds_per_job": overhead, "ratio": steady_b / steady_a, "local_first_job_seconds": a[0],
           "ray_first_job_seconds": b[0], "ray_runtime_start_seconds": startup, "local_jobs": a, "ray_jobs": b}
    out["ray"] = res
    print(f"\nRay backend vs the local worker: {n} jobs each, interleaved, one at a time on 1 CPU "
          f"({JOB['data']['tokens_per_domain']:,} tokens, d_sae {JOB['sae']['d_sae']}, {JOB['train']['epochs']} epochs, "
          "no analysis; activations collected beforehand)")
    print(f"  {'':22s} {'s per job (median)':>19s} {'first job s':>12s}")
    print(f"  {'local worker':22s} {steady_a:>19.2f} {a[0]:>12.2f}")
    print(f"  {'ray (local runtime)':22s} {steady_b:>19.2f} {b[0]:>12.2f}")
    print(f"  overhead per job: {overhead:+.2f} s (x{steady_b / steady_a:.2f}); once per driver: {startup:.1f} s to start "
          f"the Ray runtime, and the first job {b[0] - a[0]:+.1f} s (its Ray worker process starts and imports torch)")
    verdict = "met" if overhead <= 2.0 else "NOT met"
    print(f"  target (<= 2 s per job): {verdict}")
