"""Helpers of the Ray backend's tests: tiny sweeps, real Ray clusters started with ``ray start``, checks.

Every Ray process a test starts is stopped by the test itself, by process group: ``ray stop`` would
stop every Ray runtime on the machine, including another test file's running beside it (``make test``
runs two files at a time).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

import db
from core.lab import Lab
from tests.helpers import REPO
from tests.helpers import wait_for as helpers_wait_for

RAY = str(Path(sys.executable).with_name("ray"))

# Small enough to train in seconds, large enough to checkpoint and log many times. No splice
# evaluation: a task that does not collect then never loads the model (nor imports transformers).
BASE = {
    "data": {"tokens_per_domain": 3000, "layers": [1, 2]},
    "sae": {"d_sae": 128, "k": 8},
    "train": {"epochs": 3, "batch_size": 256, "checkpoint_every_seconds": 0.5, "log_every_steps": 5},
    "eval": {"splice_sequences": 0},
}


def spec_file(folder: Path, name: str = "t", parameters: dict | None = None, **base_changes) -> Path:
    base = json.loads(json.dumps(BASE))
    for section, values in base_changes.items():
        base[section] = {**base.get(section, {}), **values} if isinstance(values, dict) else values
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"name": name, "parameters": parameters or {"layer": [1, 2]}, "base": base}))
    return path


def wait_for(predicate, timeout: float = 600, every: float = 0.2):
    """``tests.helpers.wait_for`` with Ray's longer default."""
    return helpers_wait_for(predicate, timeout, every)


def engine_cmd(lab: Lab, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine", "--lab", str(lab.root), "-q", *args]


def start_engine(lab: Lab, log: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m engine ARGS`` in the background, its own process group, output to ``log``."""
    out = open(log, "ab")
    return subprocess.Popen(engine_cmd(lab, *args), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, start_new_session=True)


def stop_group(pgid: int, leader: subprocess.Popen | None = None, grace: float = 10.0) -> None:
    """Stop a process group we started and every process that descends from it.

    Only while the id is still ours: once the group's leader has exited and been reaped, a process id
    can be reused, and a new process with this id leads a group that is not ours (no process can get
    the id while our group has a member, so when no process ``pgid`` exists, the group is ours)."""
    if not (leader is not None and leader.poll() is None) and psutil.pid_exists(pgid):
        return
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p)
                members.extend(p.children(recursive=True))
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    for p in members:  # test processes: nothing to save, no grace needed
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(members, timeout=grace)


def jobs(lab: Lab, sweep_id: str | None = None):
    sql = "SELECT * FROM jobs" + (" WHERE sweep_id = ?" if sweep_id else "") + " ORDER BY seq"
    return db.query(lab, sql, [sweep_id] if sweep_id else None)


def training_step(lab: Lab) -> int:
    v = db.query_rows(lab, "SELECT max(step) FROM jobs WHERE status = 'RUNNING' AND phase = 'train'")[0][0]
    return int(v or 0)


def assert_every_run_complete_once(lab: Lab, sweep_id: str, n: int, analysed: set[str] | None = None,
                                   only: set[str] | None = None) -> None:
    """Every job FINISHED (of the sweep, or those in ``only``), its run FINISHED with every logged step
    exactly once, evaluated on both domains, its SAE on disk; the runs in ``analysed`` with their
    feature analysis too."""
    j = jobs(lab, sweep_id)
    if only is not None:
        j = j[j["job_id"].isin(only)]
    assert len(j) == n and set(j["status"]) == {"FINISHED"}, j[["job_id", "status", "error"]]
    runs = db.query(lab, "SELECT run_id, status, config FROM runs WHERE sweep_id = ?", [sweep_id])
    if only is not None:
        runs = runs[runs["run_id"].isin(only)]
    assert len(runs) == n and set(runs["status"]) == {"FINISHED"} and set(runs["run_id"]) == set(j["job_id"])
    ids = list(runs["run_id"])
    m = db.query(lab, "SELECT run_id, step, name, count(*) AS n FROM step_metrics WHERE run_id IN (SELECT unnest(?)) "
                      "GROUP BY ALL", [ids])
    assert (m["n"] == 1).all()
    for r in runs.itertuples():
        total = json.loads(r.config)["training"]["total_steps"]
        steps = set(m[(m.run_id == r.run_id) & (m.name == "loss")]["step"])
        assert steps == set(range(5, total + 1, 5)) | {total}, (r.run_id, sorted(set(range(5, total + 1, 5)) - steps))
        assert (lab.run_dir(r.run_id) / "sae" / "sae_weights.safetensors").stat().st_size > 0
        assert not (lab.run_dir(r.run_id) / "checkpoint.pt").exists()
    e = db.query(lab, "SELECT run_id, count(*) AS n FROM eval_results WHERE run_id IN (SELECT unnest(?)) GROUP BY run_id",
                 [ids])
    assert len(e) == n and (e["n"] == 2).all()
    if analysed:
        a = db.query(lab, "SELECT run_id, d_sae, (SELECT count(*) FROM features f WHERE f.run_id = a.run_id) AS n_features "
                          "FROM analysis_runs a WHERE run_id IN (SELECT unnest(?))", [sorted(analysed)])
        assert len(a) == len(analysed) and (a["n_features"] == a["d_sae"]).all(), a


def in_domain_fvu(lab: Lab, sweep_id: str) -> dict[tuple[int, str], float]:
    df = db.query(lab, "SELECT r.layer, r.train_domain, e.fvu FROM runs r JOIN eval_results e "
                       "ON e.run_id = r.run_id AND e.eval_domain = r.train_domain WHERE r.sweep_id = ?", [sweep_id])
    return {(int(r.layer), r.train_domain): float(r.fvu) for r in df.itertuples()}


def sweep_ids(lab: Lab) -> list[str]:
    return [r[0] for r in db.query_rows(lab, "SELECT sweep_id FROM sweeps ORDER BY created_at")]


def lab_sharing_activations(tmp_path: Path, tmp_path_factory) -> Lab:
    """A fresh lab whose activation cache is the test session's shared one for the Ray tests: they
    all collect the same small sets (the same content hash), so the first collects them, under the
    collection's own lock, and the others -- in another test file running beside it too -- reuse them."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if base.name.startswith("popen-gw") else base) / "ray-tests-activations"
    shared.mkdir(parents=True, exist_ok=True)
    lab = Lab.at(tmp_path / "lab")
    lab.root.mkdir(parents=True)
    lab.activations.symlink_to(shared, target_is_directory=True)
    return lab


def remove_node_folders(lab: Lab) -> None:
    """What the lab's tasks kept on this machine ($TMPDIR/sae-lab-ray/<lab>)."""
    from engine.sweeps.ray_runtime import lab_key, node_folder

    shutil.rmtree(node_folder(lab_key(lab)), ignore_errors=True)


class RayCluster:
    """A head and more nodes on this machine, each from ``ray start`` with its own temporary folder
    and one CPU, token authentication on (a fresh token), no dashboard, no usage statistics."""

    def __init__(self, nodes: int = 2, cpus: int = 1):
        self.root = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths have a limit
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(24),
                    "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        self.env.pop("RAY_ADDRESS", None)
        self.groups: list[int] = []
        self.address = ""
        try:
            self._start(["--head", "--port", "0", "--include-dashboard", "false"], "head", cpus)
            for i in range(1, nodes):
                self._start(["--address", self.address], f"node{i}", cpus)
        except BaseException:
            self.stop()
            raise

    def _start(self, args: list[str], name: str, cpus: int) -> None:
        cmd = [RAY, "start", *args, "--num-cpus", str(cpus), "--temp-dir", str(self.root / name), "--disable-usage-stats"]
        p = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        self.groups.append(p.pid)
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
        if not self.address:
            self.address = re.search(r"--address='([^']+)'", out).group(1)

    def stop(self) -> None:
        for pgid in reversed(self.groups):
            stop_group(pgid)
        shutil.rmtree(self.root, ignore_errors=True)
