"""The sweep queue: validation, exactly-once claiming, cancel, SIGTERM, SIGKILL recovery, busy database.

Workers are real processes (`python -m engine worker`) on a real DuckDB file; kills are real signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import db
from core.errors import LabError
from core.lab import Lab
from engine.sweeps.leaderboard import pareto_front
from engine.sweeps.queue import enqueue_sweep
from engine.sweeps.spec import SweepSpec, expand, load_spec
from engine.sweeps.worker import LIVE_MAX_SECONDS
from tests.helpers import REPO, wait_for

# Real worker processes on a loaded machine: the per-test limit allows for a slow start, not a hang.
pytestmark = pytest.mark.timeout(1800)

BASE = {
    "data": {"tokens_per_domain": 8000, "layers": [0, 1, 2]},
    "sae": {"d_sae": 256, "k": 8},
    # 8 epochs = 225 steps: enough to kill mid-training at step 60. A checkpoint a second, not more:
    # each costs a file write and a database flush, and at 0.3 s they were a fifth of a job's time.
    "train": {"epochs": 8, "batch_size": 256, "checkpoint_every_seconds": 1.0, "log_every_steps": 5},
    "eval": {"splice_sequences": 2},
}


def spec(**kw) -> SweepSpec:
    d = {"name": "t", "parameters": {"layer": [1, 2]}, "base": BASE}
    d.update(kw)
    return SweepSpec.from_dict(d)


def start_worker(lab: Lab, *extra: str, env: dict | None = None, fault: tuple[str, Path] | None = None) -> subprocess.Popen:
    """``python -m engine worker``; with ``fault`` = (FAULT, MARKER), through tests/fault_worker.py: ``write``
    pauses inside a database write, ``step=N`` holds each job's training at step N until MARKER is deleted."""
    program = ["-m", "engine"] if fault is None else ["-m", "tests.fault_worker", fault[0], str(fault[1])]
    # --nice 0: at the default niceness 10, CPU-bound neighbours starve a worker to ~5 % of a core.
    # --threads 1: tiny matrices; next to other CPU-bound processes, two OpenMP threads mostly wait on each other.
    cmd = [sys.executable, *program, "--lab", str(lab.root), "-q", "worker", "--no-analysis", "--nice", "0",
           "--threads", "1", "--stale-seconds", "3", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def jobs(lab: Lab) -> pd.DataFrame:
    return db.query(lab, "SELECT * FROM jobs ORDER BY seq")


def held_in_training(lab: Lab, tmp_path: Path, step: int, *extra: str) -> tuple[subprocess.Popen, Path]:
    """A worker whose first job holds mid-training at ``step``, checkpointed there, and the hold's marker.

    Polling the live panel for a step raced the training: on an idle machine these jobs train in
    under a second, between two of the panel's writes (CI once waited 420 s for a step it never saw).
    Delete the marker to let the worker go on; its next job holds at the same step. A cancel flagged
    during the hold is seen at the first step after it once the hold lasted ``LIVE_MAX_SECONDS``."""
    marker = tmp_path / "held"
    w = start_worker(lab, *extra, fault=(f"step={step}", marker))
    wait_for(marker.exists)
    return w, marker


def assert_complete_and_unique(lab: Lab, n_runs: int) -> None:
    j = jobs(lab)
    assert len(j) == n_runs and set(j["status"]) == {"FINISHED"}, j[["job_id", "status", "error"]]
    runs = db.query(lab, "SELECT run_id, status, config FROM runs")
    assert len(runs) == n_runs and set(runs["status"]) == {"FINISHED"}
    assert set(runs["run_id"]) == set(j["job_id"])
    # No metric row doubled (the key forbids it) and none missing: every logged step is there once.
    m = db.query(lab, "SELECT run_id, step, name, count(*) AS n FROM step_metrics GROUP BY ALL")
    assert (m["n"] == 1).all()
    import json

    for r in runs.itertuples():
        total = json.loads(r.config)["training"]["total_steps"]
        steps = set(m[(m.run_id == r.run_id) & (m.name == "loss")]["step"])
        assert steps == set(range(5, total + 1, 5)) | {total}, (r.run_id, sorted(set(range(5, total + 1, 5)) - steps))
    e = db.query(lab, "SELECT run_id, count(*) AS n FROM eval_results GROUP BY run_id")
    assert len(e) == n_runs and (e["n"] == 2).all()


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"parameters": {"layr": [1]}}, "unknown sweep parameter 'layr'"),
        ({"parameters": {"k": []}}, "empty list of values"),
        ({"parameters": {}}, "no parameters"),
        ({"parameters": {"k": [8, 2048]}}, "larger than d_sae"),
        ({"parameters": {"layer": [2, 7]}}, "layer 7 is out of range"),
        ({"run_cap": 0}, "'SweepSpec.run_cap' = 0 is out of range: run_cap must be at least 1"),
        ({"metric": {"name": "vibes"}}, "unknown sweep metric"),
    ],
)
def test_invalid_sweeps_enqueue_nothing(lab, bad, message):
    db.ensure_schema(lab)
    with pytest.raises(LabError, match=message):
        enqueue_sweep(lab, spec(**bad))
    assert db.query_rows(lab, "SELECT count(*) FROM jobs")[0][0] == 0
    assert db.query_rows(lab, "SELECT count(*) FROM sweeps")[0][0] == 0


def test_presets_expand_as_the_seeds_describe():
    everything = expand(load_spec("everything"))
    assert len(everything) == 18 and sum(len(c.training_domains) for c in everything) == 36
    assert {c.sae.k for c in expand(load_spec("topk-sweep"))} == {48, 24, 16}
    assert {c.layer for c in expand(load_spec("layer-sweep"))} == set(range(6))
    capped = SweepSpec.from_dict({"method": "random",
                                  "parameters": {"k": [4, 8, 16],
                                                 "lr": {"min": 1e-4, "max": 1e-2, "distribution": "log_uniform"}},
                                  "run_cap": 5, "seed": 3})
    a, b = expand(capped), expand(capped)
    assert [c.to_dict() for c in a] == [c.to_dict() for c in b] and len(a) == 5


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The crash test's sweep run to completion by two workers at once, never interrupted."""
    lab = Lab.at(tmp_path_factory.mktemp("clean") / "lab")
    _, runs = enqueue_sweep(lab, spec())
    ws = [start_worker(lab) for _ in range(2)]
    for w in ws:
        assert w.wait(timeout=900) == 0, w.stdout.read()
    return lab, runs


def in_domain_fvu(lab: Lab) -> dict[tuple[int, str], float]:
    df = db.query(lab, "SELECT r.layer, r.train_domain, e.fvu FROM runs r JOIN eval_results e "
                            "ON e.run_id = r.run_id AND e.eval_domain = r.train_domain")
    return {(int(r.layer), r.train_domain): float(r.fvu) for r in df.itertuples()}


def test_two_workers_claim_each_job_once(uninterrupted):
    lab, runs = uninterrupted
    j = jobs(lab)
    assert (j["attempts"] == 1).all() and j["worker_id"].nunique() == 2
    assert_complete_and_unique(lab, len(runs))


def test_sigkill_during_training_and_during_a_write_then_resume(lab, tmp_path, uninterrupted):
    _, runs = enqueue_sweep(lab, spec())
    # 1. SIGKILL while training (after a checkpoint exists).
    w, _ = held_in_training(lab, tmp_path, 60)
    assert list(lab.runs.glob("*/checkpoint.pt"))
    w.send_signal(signal.SIGKILL)
    w.wait()
    # A job of the worker's share group may have ended before the kill landed (members end at their
    # own steps); the kill must leave no job failed or killed, and at least one caught mid-training.
    statuses = db.query(lab, "SELECT status FROM jobs")["status"]
    assert set(statuses) <= {"QUEUED", "RUNNING", "FINISHED"}
    assert (statuses == "RUNNING").any()
    # 2. SIGKILL inside an open write transaction (the fault point pauses before COMMIT).
    marker = tmp_path / "in-write"
    w = start_worker(lab, fault=("write", marker))
    wait_for(lambda: marker.exists())
    w.send_signal(signal.SIGKILL)
    w.wait()
    # The database is readable and consistent after both kills.
    assert db.query_rows(lab, "SELECT count(*) FROM runs")[0][0] >= 1
    # 3. A fresh worker requeues the interrupted job, resumes it from its checkpoint, finishes the sweep.
    w = start_worker(lab)
    out, _ = w.communicate(timeout=900)
    assert w.returncode == 0, out
    assert "was interrupted: requeued" in out
    assert_complete_and_unique(lab, len(runs))
    assert jobs(lab)["attempts"].max() >= 2
    # 4. The resumed runs end where uninterrupted ones do, up to run-to-run noise.
    resumed, clean = in_domain_fvu(lab), in_domain_fvu(uninterrupted[0])
    assert resumed.keys() == clean.keys()
    for key in clean:
        assert resumed[key] == pytest.approx(clean[key], abs=0.01), key


def test_a_worker_started_within_a_second_of_a_crash_recovers_the_job_before_it_exits(lab, tmp_path):
    """No staleness wait on the same host: the dead worker's job is requeued at once and finished.

    The new worker keeps the default 30 s staleness: before, it saw a fresh heartbeat, ran the other
    job, exited 0 and left the dead worker's job RUNNING forever."""
    _, runs = enqueue_sweep(lab, spec())
    w, _ = held_in_training(lab, tmp_path, 20)
    killed_job = db.query_rows(lab, "SELECT job_id FROM jobs WHERE status = 'RUNNING'")[0][0]
    w.send_signal(signal.SIGKILL)
    w.wait()
    cmd = [sys.executable, "-m", "engine", "--lab", str(lab.root), "-q", "worker", "--no-analysis", "--nice", "0",
           "--threads", "1"]
    w = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = w.communicate(timeout=900)
    assert w.returncode == 0, out
    assert f"job {killed_job} was interrupted: requeued" in out
    assert_complete_and_unique(lab, len(runs))
    status = db.query(lab, "SELECT job_id, attempts FROM jobs")
    assert dict(zip(status["job_id"], status["attempts"]))[killed_job] == 2


def test_two_workers_that_see_one_dead_owner_requeue_its_job_once(lab):
    """A requeue is conditioned on the owner found gone: a job already reclaimed is left alone."""
    from engine.sweeps.queue import WorkerIdentity, claim_next, interrupted_jobs, register_worker, requeue_interrupted

    db.ensure_schema(lab)
    enqueue_sweep(lab, spec(parameters={"layer": [2]}))
    ghost = WorkerIdentity("w-ghost", WorkerIdentity.current().host, 2**22 + 7, 0.0)  # no such process
    register_worker(lab, ghost)
    job = claim_next(lab, ghost)
    seen_by_both = interrupted_jobs(lab)
    assert [j.job_id for j in seen_by_both] == [job.run_id]
    assert requeue_interrupted(lab) == [job.run_id]  # the first worker requeues it...
    me = WorkerIdentity.current()
    register_worker(lab, me)
    assert claim_next(lab, me).run_id == job.run_id  # ...and claims it again
    # The second worker acts on what it saw before the reclaim: the live claim must stand.
    assert requeue_interrupted(lab, found=seen_by_both) == []
    assert db.query_rows(lab, "SELECT status, worker_id FROM jobs WHERE job_id = ?", [job.run_id]) == [
        ("RUNNING", me.worker_id)]


def test_worker_survives_a_reader_then_a_writer_holding_the_database(lab, tmp_path):
    _, runs = enqueue_sweep(lab, spec(parameters={"layer": [2]}))
    w, held = held_in_training(lab, tmp_path, 10)
    for read_only in (True, False):
        code = (
            "import duckdb, time\n"
            "while True:\n"
            f"    try: c = duckdb.connect({str(lab.db)!r}, read_only={read_only}); break\n"
            "    except duckdb.IOException: time.sleep(0.01)\n"
            "print('held', flush=True); time.sleep(4)"
        )
        holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        held.unlink(missing_ok=True)  # the worker trains on (and then evaluates) while the database is held
        holder.wait()
    while w.poll() is None:  # the sweep's next job holds too: let it go
        held.unlink(missing_ok=True)
        time.sleep(0.1)
    out, _ = w.communicate(timeout=900)
    assert w.returncode == 0, out
    assert_complete_and_unique(lab, len(runs))


def test_cancel_and_sigterm_mark_runs_killed(lab, tmp_path):
    _, runs = enqueue_sweep(lab, spec(parameters={"layer": [1, 2]}))
    w, held = held_in_training(lab, tmp_path, 10)
    running = db.query(lab, "SELECT job_id FROM jobs WHERE status = 'RUNNING'").iloc[0, 0]
    from engine.sweeps.queue import cancel_queued_and_flag_running

    cancel_queued_and_flag_running(lab, job_ids=[running])
    time.sleep(LIVE_MAX_SECONDS)  # the held job's next step reads its flag
    held.unlink()
    wait_for(lambda: db.query(lab, "SELECT status FROM jobs WHERE job_id = ?", [running]).iloc[0, 0] == "KILLED")
    assert db.query(lab, "SELECT status FROM runs WHERE run_id = ?", [running]).iloc[0, 0] == "KILLED"
    wait_for(held.exists)  # the worker moved on to the next job, and holds in its training
    w.send_signal(signal.SIGTERM)
    w.wait(timeout=600)
    statuses = db.query(lab, "SELECT status FROM runs")["status"]
    assert (statuses == "KILLED").sum() == 2 and not (statuses == "RUNNING").any()
    killed_jobs = db.query(lab, "SELECT count(*) FROM jobs WHERE status = 'KILLED'").iloc[0, 0]
    assert killed_jobs == 2


def test_pareto_front_is_the_non_dominated_set():
    df = pd.DataFrame({"layer": [1, 1, 1, 1, 2], "l0": [4, 8, 16, 8, 4], "fvu": [0.6, 0.5, 0.45, 0.55, 0.9]})
    front = pareto_front(df)
    assert sorted(zip(front["layer"], front["l0"])) == [(1, 4), (1, 8), (1, 16), (2, 4)]
