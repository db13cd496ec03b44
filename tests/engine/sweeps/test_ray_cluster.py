"""The Ray backend on a cluster of two nodes on this machine (``ray start --head`` and ``ray start
--address``, one CPU and a temporary folder each), shared by the module's tests.

Real Ray, real processes, real signals: a Ray worker killed in the middle of training, a job
cancelled from the queue, a driver killed with SIGKILL and a new one re-attaching. Every wait is
on a condition, with a generous limit: on a loaded 2-core machine a Ray worker's imports alone can
take half a minute.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

import db
from core.lab import Lab
from engine.sweeps.queue import cancel_queued_and_flag_running
from tests.ray_helpers import (
    RayCluster,
    assert_every_run_complete_once,
    jobs,
    remove_node_folders,
    spec_file,
    start_engine,
    stop_group,
    sweep_ids,
    wait_for,
)

pytestmark = pytest.mark.timeout(1200)

# Long enough to be caught in the middle of training (~180 steps), short enough to take seconds.
LONG = {"epochs": 16}
DRIVER = ["--no-analysis", "--nice", "0", "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def cluster():
    c = RayCluster(nodes=2, cpus=1)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def lab(tmp_path):
    lab = Lab.at(tmp_path / "lab")
    yield lab
    remove_node_folders(lab)


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def started_pid(log: Path, job_id: str) -> int | None:
    """The pid of the Ray worker process running the job, as the driver logged it."""
    found = re.findall(rf"job {job_id}: started on node \S+ \(\S+, pid (\d+)\)", log_text(log))
    return int(found[-1]) if found else None


def checkpoint_kept(lab: Lab, job_id: str) -> bool:
    return (lab.run_dir(job_id) / "checkpoint.pt").exists()


def job_in_training(lab: Lab, min_step: int, exclude: set[str] = frozenset()) -> str | None:
    if not lab.db.exists():
        return None
    rows = db.query_rows(lab, "SELECT job_id FROM jobs WHERE status = 'RUNNING' AND phase = 'train' AND step >= ? "
                              "ORDER BY seq", [min_step])
    ids = [r[0] for r in rows if r[0] not in exclude]
    return ids[0] if ids else None


def test_jobs_run_on_both_nodes_a_killed_worker_resumes_and_a_cancel_stops_its_task(cluster, lab, tmp_path):
    log = tmp_path / "driver.log"
    driver = start_engine(lab, log, "sweep", str(spec_file(tmp_path, train=LONG)), "--backend", "ray",
                          "--address", cluster.address, *DRIVER, env=cluster.env)
    try:
        # 1. SIGKILL the Ray worker process training a job, once a checkpoint of it reached the driver.
        victim = wait_for(lambda: (j := job_in_training(lab, 30)) and checkpoint_kept(lab, j) and started_pid(log, j) and j)
        os.kill(started_pid(log, victim), signal.SIGKILL)
        # 2. Cancel another job while it trains: its task stops at its next step.
        cancelled = wait_for(lambda: job_in_training(lab, 10, exclude={victim}))
        cancel_queued_and_flag_running(lab, job_ids=[cancelled])
        assert driver.wait(timeout=900) == 0, log_text(log)[-4000:]
    finally:
        stop_group(driver.pid)
    out = log_text(log)
    (sweep,) = sweep_ids(lab)
    j = jobs(lab, sweep).set_index("job_id")
    # Both nodes ran jobs, and every result is in the one lab database.
    assert j["node"].nunique() == 2, j["node"]
    # The killed worker's task was retried by Ray and resumed from its checkpoint; it finished once.
    resumed = re.search(rf"job {victim}: FINISHED on node \S+, resumed from step (\d+)", out)
    assert f"job {victim}: Ray retried its task" in out and resumed and int(resumed.group(1)) > 0, out[-4000:]
    assert j.loc[victim, "attempts"] == 2
    # The cancelled job ended KILLED, its run too, and it keeps its checkpoint (it may be resumed).
    assert j.loc[cancelled, "status"] == "KILLED" and j.loc[cancelled, "error"] == "cancelled"
    assert db.query_rows(lab, "SELECT status FROM runs WHERE run_id = ?", [cancelled]) == [("KILLED",)]
    assert checkpoint_kept(lab, cancelled)
    # The other three: complete, once (the cancelled job's rows checked above).
    with db.transaction(lab) as con:  # set it aside so the check below sees the sweep's finished jobs only
        con.execute("UPDATE jobs SET sweep_id = NULL WHERE job_id = ?", [cancelled])
        con.execute("UPDATE runs SET sweep_id = NULL WHERE run_id = ?", [cancelled])
    assert_every_run_complete_once(lab, sweep, 3)


def test_a_driver_killed_with_sigkill_is_replaced_and_the_sweep_completes_once(cluster, lab, tmp_path):
    log = tmp_path / "driver.log"
    one_job = spec_file(tmp_path, parameters={"layer": [2]}, train=LONG, train_domains=["prose"])
    first = start_engine(lab, log, "sweep", str(one_job), "--backend", "ray", "--address", cluster.address, *DRIVER,
                         env=cluster.env)
    try:
        # The job training, with a checkpoint in the lab: then the driver dies without a word.
        caught = wait_for(lambda: (j := job_in_training(lab, 20)) and checkpoint_kept(lab, j) and j)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        stop_group(first.pid)
    (sweep,) = sweep_ids(lab)
    assert jobs(lab, sweep)["status"].tolist() == ["RUNNING"]  # left RUNNING under the dead driver's identity
    # A new driver (at the address the lab's last driver used) re-attaches and finishes the sweep; this
    # one analyses what it runs, and the analysis's rows land with the rest.
    log2 = tmp_path / "driver2.log"
    second = start_engine(lab, log2, "ray-driver", *DRIVER[1:], env=cluster.env)
    try:
        assert second.wait(timeout=900) == 0, log_text(log2)[-4000:]
    finally:
        stop_group(second.pid)
    out = log_text(log2)
    assert f"job {caught} was interrupted: requeued" in out
    resumed = re.search(rf"job {caught}: FINISHED on node \S+, resumed from step (\d+)", out)
    assert resumed and int(resumed.group(1)) > 0, out[-4000:]
    assert_every_run_complete_once(lab, sweep, 1, analysed={caught})  # nothing lost, nothing doubled
    assert jobs(lab, sweep)["attempts"].tolist() == [2]
    assert db.query_rows(lab, "SELECT count(*) FROM token_sequences")[0][0] > 0
