"""Run administration: delete_run (a run's rows leave every table that names it, its folder goes,
shared data stays), and from the CLI `runs mark-failed`, `runs delete` and `cancel` on a stuck run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import db
from core.errors import LabError
from tests.helpers import add_running_run, copy_lab, dead_process, error_lines, run_cli, small_overrides, wait_for


def test_delete_run_removes_the_run_everywhere_and_nothing_shared(finished_lab, tmp_path):
    from engine.run_admin import delete_run

    src, _config, outcomes = finished_lab
    lab = copy_lab(src.root, tmp_path / "lab")
    gone, kept = outcomes[0].run_id, outcomes[1].run_id
    with db.transaction(lab) as con:  # a parent keyed by its own id, and its child (as interventions have)
        con.execute("CREATE TABLE t_parent (parent_id VARCHAR PRIMARY KEY, run_id VARCHAR)")
        con.execute("CREATE TABLE t_child (parent_id VARCHAR, x INTEGER)")
        con.execute("INSERT INTO t_parent VALUES ('p1', ?), ('p2', ?)", [gone, kept])
        con.execute("INSERT INTO t_child VALUES ('p1', 1), ('p1', 2), ('p2', 3)")
    tables = [r[0] for r in db.query_rows(lab, "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'run_id' "
                                                    "AND table_name IN (SELECT table_name FROM duckdb_tables())")]
    before = {t: db.query_rows(lab, f'SELECT count(*) FILTER (run_id = ?), count(*) FROM "{t}"', [gone])[0] for t in tables}
    shared = db.query_rows(lab, "SELECT (SELECT count(*) FROM token_sequences), (SELECT count(*) FROM activation_sets)")
    assert before["runs"][0] == 1 and before["features"][0] > 0 and before["step_metrics"][0] > 0

    deleted = delete_run(lab, gone)
    for t in tables:
        mine, total = before[t]
        assert db.query_rows(lab, f'SELECT count(*) FILTER (run_id = ?), count(*) FROM "{t}"', [gone])[0] == (0, total - mine), t
        assert deleted.get(t, 0) == mine
    assert db.query_rows(lab, "SELECT (SELECT count(*) FROM token_sequences), (SELECT count(*) FROM activation_sets)") == shared
    assert not lab.run_dir(gone).exists() and lab.run_dir(kept).exists()
    assert db.query_rows(lab, "SELECT * FROM t_child") == [("p2", 3)] and deleted["t_child"] == 2
    assert db.query_rows(lab, "SELECT count(*) FROM features WHERE run_id = ?", [kept])[0][0] > 0

    with pytest.raises(LabError, match=f"unknown run '{gone}'"):
        delete_run(lab, gone)
    with pytest.raises(LabError, match="is not a run id"):
        delete_run(lab, "../x")


# -- run administration from the CLI: mark-failed, delete, cancel on a stuck run -------------------


@pytest.fixture
def admin_lab(finished_lab, tmp_path):
    src, _config, outcomes = finished_lab
    return copy_lab(src.root, tmp_path / "lab"), outcomes


def status_of(lab, run_id):
    return db.query_rows(lab, "SELECT status, error FROM runs WHERE run_id = ?", [run_id])[0]


def files_of(lab) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(lab.root.rglob("*")) if p.is_file() and ".lock" not in p.name}


@pytest.mark.parametrize("job", [None, "RUNNING"])
def test_mark_failed_ends_a_run_whose_process_is_gone(admin_lab, job):
    lab, _ = admin_lab
    pid, started = dead_process()
    add_running_run(lab, "stuck-1", pid, started, with_job=job)
    r = run_cli("runs", "mark-failed", "stuck-1", lab=lab.root)
    assert r.returncode == 0, r.stderr
    assert "run stuck-1 marked FAILED" in r.stdout and "runs delete stuck-1" in r.stdout
    status, error = status_of(lab, "stuck-1")
    assert status == "FAILED" and f"process {pid}" in error
    assert sorted(p.name for p in lab.run_dir("stuck-1").iterdir() if p.name != ".owner.lock") == []
    if job:
        assert db.query_rows(lab, "SELECT status, error FROM jobs WHERE job_id = 'stuck-1'")[0] == ("FAILED", error)
    r = run_cli("runs", "mark-failed", "stuck-1", lab=lab.root)
    assert r.returncode == 2 and error_lines(r) == [
        "error: run 'stuck-1' is FAILED, not RUNNING: nothing to mark; "
        "delete it with python -m engine runs delete stuck-1 if you no longer want it"]


def test_mark_failed_refuses_a_run_whose_process_is_alive(admin_lab):
    lab, _ = admin_lab
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        add_running_run(lab, "alive-1", sleeper.pid, psutil.Process(sleeper.pid).create_time())
        add_running_run(lab, "elsewhere-1", 1, 1.0, host="another-host.example")
        before = files_of(lab)
        for rid, words in (("alive-1", f"still being run by process {sleeper.pid}"), ("elsewhere-1", "another machine")):
            r = run_cli("runs", "mark-failed", rid, lab=lab.root)
            lines = error_lines(r)
            assert r.returncode == 2 and len(lines) == 1 and words in lines[0], r.stderr
        assert status_of(lab, "alive-1")[0] == "RUNNING" and files_of(lab) == before
        r = run_cli("runs", "mark-failed", "no-such-run", lab=lab.root)
        assert r.returncode == 2 and error_lines(r)[0].startswith("error: unknown run 'no-such-run'")
        r = run_cli("runs", "delete", "alive-1", lab=lab.root)
        assert r.returncode == 2 and "still RUNNING" in error_lines(r)[0] and lab.run_dir("alive-1").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cancel_says_what_it_did_with_a_stuck_run_and_points_to_mark_failed(admin_lab):
    lab, outcomes = admin_lab
    pid, started = dead_process()
    add_running_run(lab, "stuck-run", pid, started)
    add_running_run(lab, "stuck-job", pid, started, with_job="RUNNING")
    r = run_cli("cancel", "stuck-run", "stuck-job", outcomes[0].run_id, lab=lab.root)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == (f"run stuck-run: RUNNING, but process {pid} on {socket.gethostname()} is gone, so nothing can stop it: "
                      "nothing cancelled; end it with python -m engine runs mark-failed stuck-run")
    assert "job stuck-job: RUNNING, but its worker is gone" in out[1] and "runs mark-failed stuck-job" in out[1]
    assert out[2] == f"run {outcomes[0].run_id}: already FINISHED, nothing to cancel"
    assert status_of(lab, "stuck-run")[0] == "RUNNING"  # cancel changes nothing it cannot stop
    r = run_cli("cancel", "stuck-run", "nope", lab=lab.root)
    assert r.returncode == 2 and error_lines(r)[0].startswith("error: unknown job or run 'nope'")


def test_runs_delete_removes_the_run_and_keeps_findings_cards(admin_lab):
    from findings.prefill import card_from_feature

    lab, outcomes = admin_lab
    rid = outcomes[0].run_id
    feature = db.query_rows(lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead LIMIT 1", [rid])[0][0]
    card = card_from_feature(lab, rid, feature, author="t")
    r = run_cli("runs", "delete", rid, lab=lab.root)
    assert r.returncode == 0, r.stderr
    assert f"run {rid} deleted" in r.stdout and "runs 1" in r.stdout and "findings cards" in r.stdout
    assert not lab.run_dir(rid).exists()
    assert db.query_rows(lab, "SELECT count(*) FROM runs WHERE run_id = ?", [rid])[0][0] == 0
    shown = run_cli("findings", "show", card.card_id, lab=lab.root)
    assert shown.returncode == 0 and f"feature {feature} of run {rid}" in shown.stdout, shown.stderr
    r = run_cli("runs", "delete", rid, lab=lab.root)
    assert r.returncode == 2 and error_lines(r)[0].startswith(f"error: unknown run '{rid}'")


def test_a_stuck_job_run_must_be_marked_failed_before_it_is_deleted(admin_lab):
    lab, _ = admin_lab
    pid, started = dead_process()
    add_running_run(lab, "stuck-job", pid, started, with_job="RUNNING")
    r = run_cli("runs", "delete", "stuck-job", lab=lab.root)
    assert r.returncode == 2 and "runs mark-failed stuck-job" in error_lines(r)[0]
    assert run_cli("runs", "mark-failed", "stuck-job", lab=lab.root).returncode == 0
    r = run_cli("runs", "delete", "stuck-job", lab=lab.root)
    assert r.returncode == 0 and not lab.run_dir("stuck-job").exists(), r.stderr


def test_a_killed_training_is_marked_failed_by_the_next_command_that_writes(admin_lab, tmp_path):
    """A real `train` killed mid-run (SIGKILL: no chance to record anything) stays RUNNING for readers;
    the next command that opens the lab for writing marks it FAILED and removes its leftovers.

    The training holds at step 60, checkpointed there (tests/fault_worker.py), so the kill lands
    mid-training whatever the machine's speed."""
    lab, _ = admin_lab
    sets = [a for o in small_overrides(tokens=8000, epochs=8.0, d_sae=512, k=8) + ["layer=2"] for a in ("--set", o)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    held = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fault_worker", "step=60", str(held), "--lab", str(lab.root), "-q",
                             "train", *sets], cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: held.exists() or proc.poll() is not None)
        assert proc.poll() is None, "the training ended before it reached step 60"
        rows = db.query_rows(lab, "SELECT run_id FROM runs WHERE status = 'RUNNING'")
        assert rows, "the training never started"
        run_id = rows[0][0]
        assert db.query_rows(lab, "SELECT count(*) FROM step_metrics WHERE run_id = ?", [run_id])[0][0]
        assert (lab.run_dir(run_id) / "checkpoint.pt").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert run_cli("sql", "SELECT 1", lab=lab.root).returncode == 0
    assert status_of(lab, run_id)[0] == "RUNNING"  # reading changes nothing
    r = run_cli("analyze", "--all", lab=lab.root)
    assert r.returncode == 0, r.stderr
    assert error_lines(r) == [f"note: run {run_id} was RUNNING but its process is gone: marked FAILED (see its error in the "
                              "runs table)"]
    status, error = status_of(lab, run_id)
    assert status == "FAILED" and f"process {proc.pid}" in error and "stopped without recording" in error
    left = [p.name for p in lab.run_dir(run_id).iterdir()]
    assert not [n for n in left if n.endswith((".tmp", ".partial")) or n == "checkpoint.pt"], left
    assert run_cli("analyze", "--all", lab=lab.root).stderr.strip() == ""  # done once


def test_a_dead_collections_temporary_folder_is_removed_by_the_next_write(admin_lab, capsys):
    from engine.cli import main

    lab, _ = admin_lab
    pid, _started = dead_process()
    dead = lab.activations / f".tmp-0123456789abcdef0123-{pid}"
    live = lab.activations / f".tmp-0123456789abcdef0123-{os.getpid()}"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "mlp_out_L02.npy.partial").write_bytes(b"x" * 100)
    assert main(["--lab", str(lab.root), "-q", "sql", "SELECT 1"]) == 0 and dead.exists()  # reading removes nothing
    assert main(["--lab", str(lab.root), "-q", "analyze", "--all"]) == 0
    assert not dead.exists() and live.exists()
