"""A run's rows carried from a scratch lab into the lab (db/run_rows.py): what the Ray driver lands.

Real DuckDB files on both sides, rows written by the real run recorder. Landing must be idempotent
(a retried task, a re-attached driver), keep rows landed earlier with a checkpoint, and replace a
run's analysis as one set.
"""

from __future__ import annotations

import db
from core.lab import Lab
from db.run_rows import export_run_rows, land_run_rows
from engine.config import ExperimentConfig
from engine.recording import RunRecorder
from engine.runs import plan_runs

ANALYSIS = ("feature_neighbours", "analysis_runs")


def scratch_run(folder, spec, steps: range) -> Lab:
    """A scratch lab holding the run's row and a loss for each of ``steps`` (as a task's would)."""
    lab = Lab.at(folder)
    db.ensure_schema(lab)
    rec = RunRecorder(lab, spec)
    rec.start({"training": {"total_steps": 40}})
    for step in steps:
        rec.log(step, step * 256, {"loss": 1.0 / step})
    rec.writer.flush()
    rec.close()
    return lab


def land(lab: Lab, rows, owner_pid: int = 4242) -> None:
    with db.transaction(lab) as con:
        land_run_rows(con, rows, ANALYSIS, overrides={"runs": {"owner_pid": owner_pid}})


def losses(lab: Lab, run_id: str) -> list[tuple]:
    return db.query_rows(lab, "SELECT step, count(*) FROM step_metrics WHERE run_id = ? AND name = 'loss' GROUP BY step "
                              "ORDER BY step", [run_id])


def test_landing_twice_writes_nothing_twice_and_the_driver_owns_the_run(tmp_path):
    spec = plan_runs(ExperimentConfig().validate())[0]
    rows = export_run_rows(scratch_run(tmp_path / "scratch", spec, range(5, 25, 5)), spec.run_id)
    assert set(rows) == {"runs", "step_metrics"}
    lab = Lab.at(tmp_path / "lab")
    land(lab, rows)
    land(lab, rows)
    assert losses(lab, spec.run_id) == [(s, 1) for s in range(5, 25, 5)]
    assert db.query_rows(lab, "SELECT count(*), any_value(owner_pid), any_value(status) FROM runs") == [(1, 4242, "RUNNING")]


def test_a_checkpoints_rows_and_a_retry_elsewhere_land_as_one_complete_run(tmp_path):
    """A checkpoint's rows land first; the retry on another node (a fresh scratch lab) logs only the
    steps after it, with one step again: together every step once."""
    spec = plan_runs(ExperimentConfig().validate())[0]
    first = scratch_run(tmp_path / "node1", spec, range(5, 25, 5))
    lab = Lab.at(tmp_path / "lab")
    land(lab, export_run_rows(first, spec.run_id, tables=["runs", "step_metrics"], since_step=None))
    retry = scratch_run(tmp_path / "node2", spec, range(20, 45, 5))  # resumed from the checkpoint at step 20
    land(lab, export_run_rows(retry, spec.run_id))
    assert losses(lab, spec.run_id) == [(s, 1) for s in range(5, 45, 5)]
    since = export_run_rows(retry, spec.run_id, tables=["step_metrics"], since_step=30)["step_metrics"]
    assert sorted(set(since.column("step").to_pylist())) == [35, 40]


def test_an_analysis_is_replaced_as_a_set_and_shared_token_strings_are_kept(tmp_path):
    spec = plan_runs(ExperimentConfig().validate())[0]
    scratch = scratch_run(tmp_path / "scratch", spec, range(5, 10, 5))
    lab = Lab.at(tmp_path / "lab")
    db.ensure_schema(lab)
    with db.transaction(lab) as con:  # another run of the same activation set stored its token strings already
        con.execute("INSERT INTO token_sequences VALUES ('set-a', 0, 'kept as it was')")

    def analyse(neighbours: int) -> None:
        with db.transaction(scratch) as con:
            con.execute("DELETE FROM feature_neighbours")
            con.execute("DELETE FROM analysis_runs")
            for f in range(neighbours):
                con.execute("INSERT INTO feature_neighbours VALUES (?, ?, 'decoder', 0, 1, 0.5)", [spec.run_id, f])
            con.execute("INSERT INTO analysis_runs VALUES (?, ['prose'], 8, 8, 0, '{}', NULL, 1.0, NULL, now()::TIMESTAMP)",
                        [spec.run_id])
            con.execute("INSERT OR IGNORE INTO token_sequences VALUES ('set-a', 0, 'the task''s copy'), ('set-b', 0, 'new')")

    analyse(3)
    land(lab, export_run_rows(scratch, spec.run_id))
    analyse(1)  # analysed again (a retry): fewer rows this time; none of the first analysis may remain
    land(lab, export_run_rows(scratch, spec.run_id))
    assert db.query_rows(lab, "SELECT count(*) FROM feature_neighbours") == [(1,)]
    assert db.query_rows(lab, "SELECT count(*) FROM analysis_runs") == [(1,)]
    assert db.query_rows(lab, "SELECT activation_set, tokens FROM token_sequences ORDER BY 1") == [
        ("set-a", "kept as it was"), ("set-b", "new")]
