"""``python -m engine bench sweep``: a whole sweep preset from an empty lab, timed per phase.

It runs the sweep the way a researcher does (``sweep PRESET`` then worker processes), and reads
where the time went from the jobs' own ``phase_seconds`` (each job counts only its own steps, also
when it trained in one pass with others). The training's share of this machine's limit is the
encoder's FLOPs (2 x batch x (d_in + 1) x d_sae a step) over the FLOP rate a bare ``torch.mm`` of
the same shape reaches at the workers' thread count, measured in this run, in the dtype the
training used. Peak memory is the largest sum of the workers' proportional set size (PSS), sampled:
the memory they hold together, each shared page counted once. Their resident sizes (RSS) are printed
too; summed, RSS counts twice the pages both workers map from one activation file (page cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from core.errors import LabError
from core.lab import Lab
from db import query
from engine.sweeps.launch import REPO

PHASES = ("collect", "train", "eval", "analyze", "database")


def mm_rate(B: int, d: int, n: int, dtype: torch.dtype, threads: int, seconds: float = 1.5) -> float:
    """FLOP/s of ``torch.mm`` of [B, d] x [d, n] in ``dtype`` on ``threads`` threads (best of a few runs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, w = torch.randn(B, d).to(dtype), torch.randn(n, d).to(dtype)
        out = torch.empty(B, n, dtype=dtype)
        for _ in range(3):
            torch.mm(a, w.t(), out=out)
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            for _ in range(5):
                torch.mm(a, w.t(), out=out)
            best = max(best, 5 * 2 * B * d * n / (time.perf_counter() - t0))
        return best
    finally:
        torch.set_num_threads(before)


def _start_workers(lab: Lab, workers: int, threads: int, group_size: int) -> list[subprocess.Popen]:
    cmd = [sys.executable, "-m", "engine", "--lab", str(lab.root), "-q", "worker", "--threads", str(threads),
           "--nice", "0", "--group-size", str(group_size)]
    logs = lab.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(cmd, cwd=REPO, stdout=open(logs / f"bench-worker-{i}.log", "ab"), stderr=subprocess.STDOUT,
                             env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
            for i in range(workers)]


def _memory(procs: list[subprocess.Popen]) -> tuple[int, int]:
    """(sum of PSS, sum of RSS) of the workers and their children, in bytes."""
    pss = rss = 0
    for p in procs:
        try:
            proc = psutil.Process(p.pid)
            for q in [proc, *proc.children(recursive=True)]:
                info = q.memory_full_info()
                pss += getattr(info, "pss", info.rss)  # PSS is Linux's; elsewhere RSS stands in
                rss += info.rss
        except psutil.Error:
            pass
    return pss, rss


def bench_sweep(args, lab: Lab, out: dict) -> None:
    preset = args.preset
    workers, threads = args.workers, max(1, (os.cpu_count() or 1) // args.workers)
    with tempfile.TemporaryDirectory(prefix="sae-bench-sweep-") as tmp:
        fresh = Lab.at(Path(tmp) / "lab")
        print(f"sweep bench: '{preset}' from an empty lab, {workers} worker(s) x {threads} thread(s), "
              f"share groups of up to {args.group_size}", flush=True)
        enq = subprocess.run([sys.executable, "-m", "engine", "--lab", str(fresh.root), "sweep", preset,
                              *[a for s in args.set for a in ("--set", s)]], cwd=REPO, capture_output=True, text=True)
        if enq.returncode != 0:
            raise LabError(f"could not enqueue '{preset}': {enq.stderr.strip().splitlines()[-1] if enq.stderr.strip() else ''}")
        t0 = time.perf_counter()
        procs = _start_workers(fresh, workers, threads, args.group_size)
        peak = peak_rss = 0
        while any(p.poll() is None for p in procs):
            pss, rss = _memory(procs)
            peak, peak_rss = max(peak, pss), max(peak_rss, rss)
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        if any(p.returncode for p in procs):
            raise LabError(f"a worker failed: see {fresh.root / 'logs'}")
        jobs = query(fresh, "SELECT j.status, j.phase_seconds, r.config FROM jobs j JOIN runs r ON r.run_id = j.job_id")
        per_phase = dict.fromkeys(PHASES, 0.0)
        flops, dtypes = 0.0, set()
        for row in jobs.itertuples():
            for k, v in json.loads(row.phase_seconds or "{}").items():
                per_phase[k] = per_phase.get(k, 0.0) + float(v)
            cfg = json.loads(row.config)
            t = cfg["training"]
            d_in, d_sae = int(cfg["model"]["d_model"]), int(cfg["experiment"]["sae"]["d_sae"])
            flops += 2.0 * t["batch_size"] * (d_in + 1) * d_sae * t["total_steps"]
            dtypes.add(t["matmul_dtype"])
        n_fin = int((jobs["status"] == "FINISHED").sum())
        cfg0 = json.loads(jobs["config"].iloc[0])
        B, d_in, d_sae = cfg0["training"]["batch_size"], int(cfg0["model"]["d_model"]), int(cfg0["experiment"]["sae"]["d_sae"])
    rates = {name: mm_rate(B, d_in + 1, d_sae, dt, threads) for name, dt in (("float32", torch.float32),
                                                                             ("bfloat16", torch.bfloat16))}
    used = dtypes.pop() if len(dtypes) == 1 else "float32"
    train_rate = flops / max(per_phase["train"], 1e-9)  # per worker: each job's steps ran on one worker's threads
    total = sum(per_phase.values())
    minutes, secs = divmod(round(wall), 60)
    print(f"\n{n_fin}/{len(jobs)} jobs finished; wall time {minutes} min {secs} s "
          f"(collection included; target <= 6 min: {'met' if wall <= 360 else 'NOT met'}); "
          f"peak memory of the workers {peak / 2**30:.2f} GiB PSS (target < 4 GB: {'met' if peak < 4e9 else 'NOT met'}; "
          f"summed RSS {peak_rss / 2**30:.2f} GiB counts shared file pages twice)")
    print(f"where the time went ({workers} workers in parallel; worker-seconds, each job's own):")
    for k in PHASES:
        print(f"  {k:<9} {per_phase.get(k, 0.0):8.1f} s  {per_phase.get(k, 0.0) / max(total, 1e-9):6.1%}"
              f"  ~{per_phase.get(k, 0.0) / workers:6.1f} s of wall time")
    print(f"torch.mm [{B} x {d_in + 1}] x [{d_in + 1} x {d_sae}] on {threads} thread(s): "
          f"fp32 {rates['float32'] / 1e9:.0f} GFLOP/s, bf16 {rates['bfloat16'] / 1e9:.0f} GFLOP/s")
    print(f"training ({used} matmuls): encoder {train_rate / 1e9:.0f} GFLOP/s = {train_rate / rates[used]:.0%} of the "
          f"{used} torch.mm limit")
    out["sweep"] = {"preset": preset, "workers": workers, "threads": threads, "group_size": args.group_size,
                    "jobs": len(jobs), "finished": n_fin, "wall_seconds": wall, "peak_pss_bytes": peak,
                    "peak_rss_bytes": peak_rss,
                    "phase_worker_seconds": per_phase, "mm_flops": rates, "train_flops": train_rate,
                    "train_dtype": used, "train_share_of_mm": train_rate / rates[used]}
