"""Share groups: the jobs of a sweep that train on the same batches are claimed together and
trained in one pass, each ending as it would alone (issue 17).

Real workers on a real DuckDB file: in-process for the equality check, real processes for the
cancel and the SIGKILL.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

import db
from core.lab import Lab
from engine.runs import share_key
from engine.sweeps.queue import cancel_queued_and_flag_running, enqueue_sweep
from engine.sweeps.spec import SweepSpec
from engine.sweeps.worker import LIVE_MAX_SECONDS, Worker
from tests.engine.sweeps.test_queue import BASE, assert_complete_and_unique, held_in_training, jobs, start_worker

pytestmark = pytest.mark.timeout(1800)

# Two k x two architectures x two d_sae on one layer, trained on prose: one group of eight SAEs
# (evaluated on both domains).
GRID = {"name": "g", "parameters": {"k": [8, 4], "architecture": ["topk", "jumprelu"], "d_sae": [128, 64]},
        "base": {**BASE, "layer": 1, "data": {**BASE["data"], "layers": [1]}, "train_domains": ["prose"],
                 "train": {**BASE["train"], "epochs": 2}}}


def fvu_by_config(lab: Lab, sweep_id: str) -> dict[tuple, float]:
    df = db.query(lab, "SELECT r.k, r.architecture, r.d_sae, r.train_domain, e.eval_domain, e.fvu, e.l0 FROM runs r "
                       "JOIN eval_results e USING (run_id) WHERE r.sweep_id = ?", [sweep_id])
    return {(r.k, r.architecture, r.d_sae, r.train_domain, r.eval_domain): (r.fvu, r.l0) for r in df.itertuples()}


def test_a_share_group_trains_in_one_pass_and_ends_exactly_as_one_at_a_time(lab):
    grouped_id, runs = enqueue_sweep(lab, SweepSpec.from_dict(GRID))
    assert len(runs) == 8 and len({share_key(r) for r in runs}) == 1
    assert Worker(lab, threads=1, niceness=0, analysis=False, log=lambda _: None).run() == len(runs)
    alone_id, _ = enqueue_sweep(lab, SweepSpec.from_dict(GRID))
    assert Worker(lab, threads=1, niceness=0, analysis=False, group_size=1, log=lambda _: None).run() == len(runs)

    j = db.query(lab, "SELECT sweep_id, status, share_group, phase_seconds FROM jobs")
    assert (j["status"] == "FINISHED").all()
    grouped, alone = j[j.sweep_id == grouped_id], j[j.sweep_id == alone_id]
    assert grouped["share_group"].nunique() == 1 and grouped["share_group"].notna().all()
    assert alone["share_group"].isna().all()
    for text in j["phase_seconds"]:
        seconds = json.loads(text)
        assert {"collect", "train", "eval", "database"} <= seconds.keys() and seconds["train"] > 0
    # Bit for bit what each SAE gets alone: held-out FVU and L0 on both domains, all 8 runs.
    a, b = fvu_by_config(lab, grouped_id), fvu_by_config(lab, alone_id)
    assert len(a) == 16 and a == b


def test_cancelling_one_job_of_a_group_leaves_the_others_running_to_the_end(lab, tmp_path):
    spec = {**GRID, "parameters": {"k": [8, 4, 2]}, "base": {**GRID["base"], "train": {**BASE["train"], "epochs": 8}}}
    _, runs = enqueue_sweep(lab, SweepSpec.from_dict(spec))
    w, held = held_in_training(lab, tmp_path, 10)
    running = db.query(lab, "SELECT job_id, share_group FROM jobs WHERE status = 'RUNNING' ORDER BY seq")
    assert len(running) == 3 and running["share_group"].nunique() == 1  # claimed as one group
    victim = running["job_id"].iloc[1]
    cancel_queued_and_flag_running(lab, job_ids=[victim])
    time.sleep(LIVE_MAX_SECONDS)  # the group's next step reads the flag
    held.unlink()
    out, _ = w.communicate(timeout=900)
    assert w.returncode == 0, out
    j = jobs(lab).set_index("job_id")
    assert j.loc[victim, "status"] == "KILLED" and j.loc[victim, "error"] == "cancelled"
    others = [r.run_id for r in runs if r.run_id != victim]
    assert (j.loc[others, "status"] == "FINISHED").all(), j[["status", "error"]]
    r = db.query(lab, "SELECT run_id, status FROM runs").set_index("run_id")["status"]
    assert r[victim] == "KILLED" and (r[others] == "FINISHED").all()
    # The others trained to their last step, after the victim stopped.
    steps = db.query(lab, "SELECT run_id, max(step) AS s FROM step_metrics GROUP BY run_id").set_index("run_id")["s"]
    assert steps[victim] < steps[others[0]] == steps[others[1]]


def test_sigkill_of_a_worker_mid_group_then_resume(lab, tmp_path):
    spec = {**GRID, "parameters": {"k": [8, 4]}, "base": {**GRID["base"], "train": {**BASE["train"], "epochs": 8}}}  # 225 steps
    _, runs = enqueue_sweep(lab, SweepSpec.from_dict(spec))
    w, _ = held_in_training(lab, tmp_path, 60)
    assert len(list(lab.runs.glob("*/checkpoint.pt"))) == 2  # both members, at step 60
    w.send_signal(signal.SIGKILL)
    w.wait()
    assert set(jobs(lab)["status"]) <= {"QUEUED", "RUNNING"}
    w = start_worker(lab)
    out, _ = w.communicate(timeout=900)
    assert w.returncode == 0, out
    assert "was interrupted: requeued" in out and "2 jobs in one pass" in out
    assert_complete_and_unique(lab, len(runs))
    assert jobs(lab)["attempts"].max() >= 2


def test_a_group_leaves_work_for_the_other_live_workers(lab):
    from engine.sweeps.queue import WorkerIdentity, claim_group, register_worker

    _, runs = enqueue_sweep(lab, SweepSpec.from_dict({**GRID, "parameters": {"k": [8, 4, 2, 1]}}))
    assert len({share_key(r) for r in runs}) == 1
    me = WorkerIdentity.current()
    register_worker(lab, me)
    register_worker(lab, WorkerIdentity("w-other", me.host, me.pid, me.proc_started))  # beating: it wants work too
    first = claim_group(lab, me)
    assert [r.run_id for r in first] == [r.run_id for r in runs[:2]]  # 4 queued, 2 workers: half each
    second = claim_group(lab, me)  # 2 left, 2 workers: one each, so both cores train
    assert [r.run_id for r in second] == [r.run_id for r in runs[2:3]]
    j = db.query(lab, "SELECT job_id, share_group FROM jobs ORDER BY seq")
    assert j["share_group"].tolist()[:2] == [runs[0].run_id] * 2 and j["share_group"].iloc[2:].isna().all()
