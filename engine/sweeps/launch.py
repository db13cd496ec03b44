"""Starting worker processes (or a Ray driver) in the background (from the CLI's ``sweep --workers`` or the app).

Jobs never run inside the caller: a worker is its own process, detached into its own session so
closing the app or the terminal does not kill it, with its output in ``lab/logs/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.lab import Lab
from db import query
from engine.sweeps.queue import worker_alive

REPO = Path(__file__).resolve().parents[2]
# Workers this process started: alive but maybe not registered yet (importing torch takes seconds),
# so a second click does not start a second worker.
_SPAWNED: list[subprocess.Popen] = []


def live_workers(lab: Lab) -> list[str]:
    if not lab.db.exists():
        return []
    df = query(lab, "SELECT worker_id, host, pid, proc_started FROM workers WHERE stopped_at IS NULL")
    return [r.worker_id for r in df.itertuples() if worker_alive(r.host, r.pid, r.proc_started)]


def spawn_worker(lab: Lab, threads: int | None = None, analysis: bool = True, extra_env: dict | None = None) -> subprocess.Popen:
    logs = lab.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "engine", "--lab", str(lab.root.resolve()), "-q", "worker"]
    if threads:
        cmd += ["--threads", str(threads)]
    if not analysis:
        cmd.append("--no-analysis")
    log = open(logs / f"worker-{os.getpid()}-{len(list(logs.glob('worker-*.log')))}.log", "ab")
    env = {**os.environ, **(extra_env or {})}
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)


def live_ray_drivers(lab: Lab) -> list[str]:
    """Live Ray drivers of this lab (``ray-…`` rows in ``workers``)."""
    return [w for w in live_workers(lab) if w.startswith("ray-")]


def spawn_ray_driver(lab: Lab, address: str | None = None, threads: int | None = None,
                     extra_args: list[str] | None = None) -> subprocess.Popen:
    """``python -m engine ray-driver`` in the background, as its own process group (its local Ray
    runtime's processes join the group, so a later driver can clean up after one that was killed)."""
    logs = lab.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # "local": a Ray runtime on this machine, whatever cluster the lab's last driver used
    cmd = [sys.executable, "-m", "engine", "--lab", str(lab.root.resolve()), "-q", "ray-driver", "--address",
           address or "local"]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += extra_args or []
    log = open(logs / f"ray-driver-{os.getpid()}-{len(list(logs.glob('ray-driver-*.log')))}.log", "ab")
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=dict(os.environ))


def ensure_ray_driver(lab: Lab, address: str | None = None, threads: int | None = None) -> int:
    """Start a Ray driver unless one is alive (one drains the whole queue); returns how many were started."""
    pending = [p for p in _SPAWNED if p.poll() is None and "ray-driver" in p.args]
    if live_ray_drivers(lab) or pending:
        return 0
    _SPAWNED.append(spawn_ray_driver(lab, address, threads))
    return 1


def ensure_workers(lab: Lab, n: int = 1, threads: int | None = None) -> int:
    """Start workers until ``n`` are alive; returns how many were started."""
    registered = live_workers(lab)
    pending = [p for p in _SPAWNED if p.poll() is None and not any(f"-{p.pid}-" in w for w in registered)]
    missing = max(0, n - len(registered) - len(pending))
    for _ in range(missing):
        _SPAWNED.append(spawn_worker(lab, threads))
    return missing
