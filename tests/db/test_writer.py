"""Connections, migrations and the spooling writer, against real DuckDB files held by real processes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import db
from core.errors import LabBusyError
from core.lab import Lab
from db.connection import connect
from db.migrations import available_migrations
from db.writer import SPOOL_NAME, BufferedWriter, OwnerLock, append_spool, claim_spool, read_spool, replay_spools


def hold_db(lab: Lab, seconds: float, read_only: bool = False) -> subprocess.Popen:
    """Another process that opens the lab database and keeps it for ``seconds``."""
    code = (
        "import duckdb, sys, time;"
        f"c = duckdb.connect({str(lab.db)!r}, read_only={read_only});"
        "print('held', flush=True); time.sleep(float(sys.argv[1]))"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def metric_row(step: int) -> dict:
    return {"run_id": "r1", "step": step, "tokens": step * 10, "name": "loss", "value": 1.0 / step, "logged_at": db.utcnow()}


def test_migrations_are_recorded_once(tmp_path):
    lab = Lab.at(tmp_path)
    v = db.ensure_schema(lab)
    db.migrations._checked.clear()
    assert db.ensure_schema(lab) == v
    rows = db.query_rows(lab, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == [m[0] for m in available_migrations()]
    tables = {r[0] for r in db.query_rows(lab, "SELECT table_name FROM duckdb_tables()")}
    assert {"runs", "step_metrics", "eval_results", "artifacts", "schema_migrations"} <= tables


def test_connect_waits_for_another_process_then_succeeds(tmp_path):
    lab = Lab.at(tmp_path)
    db.ensure_schema(lab)
    holder = hold_db(lab, 1.5)
    t0 = time.monotonic()
    with connect(lab, wait_seconds=20) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert time.monotonic() - t0 > 0.5  # it really had to wait
    holder.wait()


def test_connect_gives_up_with_a_clear_error(tmp_path):
    lab = Lab.at(tmp_path)
    db.ensure_schema(lab)
    holder = hold_db(lab, 4)
    try:
        with pytest.raises(LabBusyError, match="stayed locked"):
            with connect(lab, wait_seconds=0.5):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_writer_spools_while_locked_and_replays_exactly_once(tmp_path):
    lab = Lab.at(tmp_path)
    db.ensure_schema(lab)
    run_dir = tmp_path / "runs" / "r1"
    w = BufferedWriter(lab, run_dir, wait_seconds=0.3)
    for step in range(1, 6):
        w.insert("step_metrics", metric_row(step))
    holder = hold_db(lab, 3, read_only=True)  # even a reader blocks a writer
    assert w.flush() is False
    assert (run_dir / SPOOL_NAME).exists()
    for step in range(6, 9):
        w.insert("step_metrics", metric_row(step))
    assert w.flush() is False  # still locked: spooled behind the first batch
    holder.wait()
    w.insert("step_metrics", metric_row(9))
    assert w.close() is True
    rows = db.query_rows(lab, "SELECT step FROM step_metrics ORDER BY step")
    assert [r[0] for r in rows] == list(range(1, 10))
    assert not list(run_dir.glob("spool*"))
    # Replaying again (as after a crash between commit and delete) doubles nothing.
    append_spool(run_dir / SPOOL_NAME,
                 [db.Op("insert", "step_metrics", list(metric_row(1)), [list(metric_row(s).values()) for s in (1, 2)])])
    assert replay_spools(lab) == 1
    assert db.query_rows(lab, "SELECT count(*) FROM step_metrics")[0][0] == 9


def test_torn_spool_line_is_skipped(tmp_path):
    spool = tmp_path / SPOOL_NAME
    append_spool(spool, [db.Op("update", "runs", where={"run_id": "x"}, values={"status": "KILLED"})])
    with open(spool, "a") as f:
        f.write('{"kind": "insert", "table": "step_metr')  # killed mid-append
    append_spool(spool, [db.Op("update", "runs", where={"run_id": "y"}, values={"status": "KILLED"})])
    ops = read_spool(spool)
    assert [op.where["run_id"] for op in ops] == ["x", "y"]


def test_replay_skips_a_live_writer(tmp_path):
    lab = Lab.at(tmp_path)
    db.ensure_schema(lab)
    run_dir = tmp_path / "runs" / "live"
    owner = OwnerLock(run_dir)
    assert owner.acquire()
    append_spool(run_dir / SPOOL_NAME, [db.Op("insert", "step_metrics", list(metric_row(1)), [list(metric_row(1).values())])])
    assert replay_spools(lab) == 0  # its owner is alive: it replays its own spool
    owner.release()
    assert replay_spools(lab) == 1
    assert claim_spool(run_dir) == []
