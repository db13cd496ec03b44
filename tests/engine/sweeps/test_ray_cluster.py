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
    lab_sharing_activations,
    remove_node_folders,
    spec_file,
    start_engine,
    stop_group,
    sweep_ids,
    wait_for,
)

pytestmark = pytest.mark.timeout(1200)

# Long enough to be caught in the middle of training (~420 steps: 5 s on a quiet machine, the first
# checkpoint in the lab after ~1 s), short enough to take seconds.
LONG = {"epochs": 40}
DRIVER = ["--no-analysis", "--nice", "0", "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def cluster():
    c = RayCluster(nodes=2, cpus=1)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def lab(tmp_path, tmp_path_factory):
    lab = lab_sharing_activations(tmp_path, tmp_path_factory)
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


def started_nodes(log: Path) -> set[str]:
    return set(re.findall(r"job \S+: (?:started|Ray retried its task) on node (\S+)", log_text(log)))


def test_jobs_run_on_both_nodes_a_killed_worker_resumes_and_a_cancel_stops_its_task(cluster, lab, tmp_path):
    """Three jobs: two short ones start at once, one on each node; one of them loses its Ray worker
    to SIGKILL mid-training. The long one (minutes of training) is cancelled once it trains."""
    log = tmp_path / "driver.log"
    spec = spec_file(tmp_path, parameters={"epochs": [40, 41, 400]}, train_domains=["prose"])
    driver = start_engine(lab, log, "sweep", str(spec), "--backend", "ray", "--address", cluster.address, *DRIVER,
                          env=cluster.env)
    try:
        long = wait_for(lambda: lab.db.exists() and len(ids := list(jobs(lab)["job_id"])) == 3 and ids[2])
        # 1. SIGKILL the Ray worker process training a short job, once a checkpoint of it reached the driver.
        victim = wait_for(lambda: (j := job_in_training(lab, 1, exclude={long})) and checkpoint_kept(lab, j)
                          and started_pid(log, j) and j, every=0.1)
        os.kill(started_pid(log, victim), signal.SIGKILL)
        # 2. Cancel the long job while it trains (it would train for minutes): its task stops at its next step.
        wait_for(lambda: job_in_training(lab, 1, exclude=set(jobs(lab)["job_id"]) - {long}), every=0.1)
        cancel_queued_and_flag_running(lab, job_ids=[long])
        assert driver.wait(timeout=900) == 0, log_text(log)[-4000:]
    finally:
        stop_group(driver.pid, driver)
    out = log_text(log)
    (sweep,) = sweep_ids(lab)
    j = jobs(lab, sweep).set_index("job_id")
    # Jobs ran on both nodes (each start is recorded in the job's row and the log), all results in one lab.
    assert len(started_nodes(log)) == 2 and j["node"].notna().all(), out[-4000:]
    # The killed worker's task was retried by Ray and resumed from its checkpoint; it finished once.
    resumed = re.search(rf"job {victim}: FINISHED on node \S+, resumed from step (\d+)", out)
    assert f"job {victim}: Ray retried its task" in out and resumed and int(resumed.group(1)) > 0, out[-4000:]
    assert j.loc[victim, "attempts"] == 2
    # The cancelled job ended KILLED, its run too, and it keeps its checkpoint (it may be resumed).
    assert j.loc[long, "status"] == "KILLED" and j.loc[long, "error"] == "cancelled", out[-4000:]
    assert db.query_rows(lab, "SELECT status FROM runs WHERE run_id = ?", [long]) == [("KILLED",)]
    assert checkpoint_kept(lab, long)
    # The two short ones: complete, once.
    assert_every_run_complete_once(lab, sweep, 2, only=set(j.index) - {long})


def test_a_driver_killed_with_sigkill_is_replaced_and_the_sweep_completes_once(cluster, lab, tmp_path):
    log = tmp_path / "driver.log"
    one_job = spec_file(tmp_path, parameters={"layer": [2]}, train=LONG, train_domains=["prose"])
    first = start_engine(lab, log, "sweep", str(one_job), "--backend", "ray", "--address", cluster.address, *DRIVER,
                         env=cluster.env)
    try:
        # The job training, with a checkpoint in the lab: then the driver dies without a word.
        caught = wait_for(lambda: (j := job_in_training(lab, 1)) and checkpoint_kept(lab, j) and j, every=0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        stop_group(first.pid, first)
    (sweep,) = sweep_ids(lab)
    assert jobs(lab, sweep)["status"].tolist() == ["RUNNING"]  # left RUNNING under the dead driver's identity
    # A new driver (at the address the lab's last driver used) re-attaches and finishes the sweep; this
    # one analyses what it runs, and the analysis's rows land with the rest.
    log2 = tmp_path / "driver2.log"
    second = start_engine(lab, log2, "ray-driver", *DRIVER[1:], env=cluster.env)
    try:
        assert second.wait(timeout=900) == 0, log_text(log2)[-4000:]
    finally:
        stop_group(second.pid, second)
    out = log_text(log2)
    assert f"job {caught} was interrupted: requeued" in out
    resumed = re.search(rf"job {caught}: FINISHED on node \S+, resumed from step (\d+)", out)
    assert resumed and int(resumed.group(1)) > 0, out[-4000:]
    assert_every_run_complete_once(lab, sweep, 1, analysed={caught})  # nothing lost, nothing doubled
    assert jobs(lab, sweep)["attempts"].tolist() == [2]
    assert db.query_rows(lab, "SELECT count(*) FROM token_sequences")[0][0] > 0
