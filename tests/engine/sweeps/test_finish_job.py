"""A job is closed only together with its run's rows.

Under load a run's writer can find the database busy for longer than it waits, even for the run's
first row, and spools what it could not write. Before, the worker then marked the job FINISHED and
the run stayed missing from ``runs`` until some later command replayed the spool: two workers on a
loaded machine finished all 4 jobs of a sweep while ``runs`` held 3 rows.
"""

from __future__ import annotations

import pytest

import db
from core.errors import LabBusyError
from core.lab import Lab
from db.writer import SPOOL_NAME, append_spool
from engine.recording import RunRecorder
from engine.sweeps.queue import WorkerIdentity, claim_next, enqueue_sweep, register_worker
from engine.sweeps.spec import SweepSpec
from engine.sweeps.worker import finish_job
from tests.db.test_writer import hold_db
from tests.engine.sweeps.test_queue import BASE


def claimed_job(lab: Lab):
    db.ensure_schema(lab)
    enqueue_sweep(lab, SweepSpec.from_dict({"name": "t", "parameters": {"layer": [2]}, "base": BASE}))
    me = WorkerIdentity.current()
    register_worker(lab, me)
    return claim_next(lab, me)


def spool_the_runs_first_row(lab: Lab, spec) -> None:
    """What RunRecorder.start leaves behind when its flush finds the database busy."""
    rec = RunRecorder(lab, spec)
    row = rec.run_row(None)
    rec.close()  # its writer is gone, as after run_locally returns
    append_spool(lab.run_dir(spec.run_id) / SPOOL_NAME, [db.Op("insert", "runs", list(row), [list(row.values())])])


def test_a_finished_job_lands_its_runs_spooled_rows_in_the_same_transaction(tmp_path):
    lab = Lab.at(tmp_path / "lab")
    spec = claimed_job(lab)
    spool_the_runs_first_row(lab, spec)
    finish_job(lab, spec.run_id, "FINISHED")
    assert db.query_rows(lab, "SELECT status FROM jobs WHERE job_id = ?", [spec.run_id]) == [("FINISHED",)]
    assert db.query_rows(lab, "SELECT count(*) FROM runs WHERE run_id = ?", [spec.run_id]) == [(1,)]
    assert not list(lab.run_dir(spec.run_id).glob("spool*"))


def test_a_job_that_cannot_be_closed_keeps_the_spool_and_stays_open(tmp_path):
    lab = Lab.at(tmp_path / "lab")
    spec = claimed_job(lab)
    spool_the_runs_first_row(lab, spec)
    holder = hold_db(lab, 3)
    with pytest.raises(LabBusyError):
        finish_job(lab, spec.run_id, "FINISHED", wait_seconds=0.2)
    holder.wait()
    assert db.query_rows(lab, "SELECT status FROM jobs WHERE job_id = ?", [spec.run_id]) == [("RUNNING",)]
    assert list(lab.run_dir(spec.run_id).glob("spool*"))  # nothing lost: the next attempt lands it
    finish_job(lab, spec.run_id, "FINISHED")
    assert db.query_rows(lab, "SELECT count(*) FROM runs WHERE run_id = ?", [spec.run_id]) == [(1,)]


def test_closing_a_job_that_never_made_a_folder_makes_none(tmp_path):
    lab = Lab.at(tmp_path / "lab")
    spec = claimed_job(lab)
    finish_job(lab, spec.run_id, "FAILED", "ValueError: bad")
    assert not lab.run_dir(spec.run_id).exists()
    assert db.query_rows(lab, "SELECT status FROM jobs WHERE job_id = ?", [spec.run_id]) == [("FAILED",)]
