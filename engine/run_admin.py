"""Run administration: deleting a run, and marking a run FAILED whose process is gone.

Deleting a run removes its rows in every table and its folder, in one transaction.

Tables are found by their columns (``run_id``, and ``run_a``/``run_b`` of matches; the job that
produced the run shares its id), so a table added by a later migration is covered without
editing this file. A child table that names a run only through its parent's one-column primary
key (``intervention_token_movers.intervention_id`` -> ``interventions``) loses the rows of the
deleted parents too. Two kinds of rows stay: what outlives a run by design (findings cards and
their frozen evidence, which refer to run ids as plain text), and what runs share (activation
sets, token sequences).

A RUNNING run whose process died (killed, crashed, stopped by a full disk before it could write its
end) never ends by itself. ``mark_failed`` ends it by hand and refuses while its process is alive;
``recover_orphaned_runs`` does the same for every such run the queue does not own, and runs each
time a command opens the lab for writing. (A RUNNING *job* whose worker is gone is the queue's:
it is requeued and resumes from its checkpoint, so runs of active jobs are left alone here.)
"""

from __future__ import annotations

import shutil
from typing import Any

from core.errors import LabError
from core.lab import Lab
from db import connect, query, replay_spools, transaction, utcnow
from engine.run_owner import Owner, owner_alive, owner_of, remove_temporary_files

# Records that must survive the run they mention (findings/: cards keep their evidence).
KEEP_TABLES = frozenset({"findings", "finding_revisions", "finding_features", "finding_evidence", "evidence_snapshots"})


def _run_tables(con) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT c.table_name, c.column_name FROM duckdb_columns() c JOIN duckdb_tables() t "
        "ON t.table_name = c.table_name AND t.schema_name = c.schema_name "
        "WHERE c.column_name IN ('run_id', 'run_a', 'run_b') ORDER BY c.table_name, c.column_name").fetchall()
    return [(t, c) for t, c in rows if t not in KEEP_TABLES]


def _child_tables(con) -> list[tuple[str, str, str, str]]:
    """(parent, its run column, its one-column primary key, a table holding that key) for every
    run table keyed by its own ``<thing>_id``, and every other table with a column of that name and type."""
    pks = {t: cols[0] for t, cols in con.execute(
        "SELECT table_name, constraint_column_names FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'").fetchall()
        if len(cols) == 1}
    types = {(t, c): ty for t, c, ty in con.execute(
        "SELECT c.table_name, c.column_name, c.data_type FROM duckdb_columns() c JOIN duckdb_tables() t "
        "ON t.table_name = c.table_name AND t.schema_name = c.schema_name").fetchall()}
    out = []
    for table, column in _run_tables(con):
        key = pks.get(table)
        # Only <thing>_id keys: a short generic name (pid, seq) shared by two tables is a coincidence.
        if key is None or key in ("run_id", "run_a", "run_b") or not key.endswith("_id"):
            continue
        out += [(table, column, key, t) for (t, c), ty in types.items()
                if c == key and t != table and t not in KEEP_TABLES and ty == types[(table, key)]]
    return sorted(set(out))


def delete_run(lab: Lab, run_id: str) -> dict[str, Any]:
    """Delete a finished, failed or killed run everywhere; returns rows deleted per table.

    Refuses a run that is still RUNNING (its process would write again) and an unknown run."""
    _check_id(run_id)
    with connect(lab, read_only=True) as con:
        row = con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not row:
        raise LabError(f"unknown run '{run_id}': list runs with python -m engine sql \"SELECT run_id, name FROM runs\"")
    if row[0][0] == "RUNNING":
        info = run_info(lab, run_id) or {}
        if owner_alive(lab, run_id, owner_of(info)) is False:
            raise LabError(f"run '{run_id}' is RUNNING but its process is gone: mark it failed first "
                           f"(python -m engine runs mark-failed {run_id}), then delete it")
        raise LabError(f"run '{run_id}' is still RUNNING: cancel it (python -m engine cancel {run_id}) and wait for it to stop")
    deleted: dict[str, int] = {}
    with transaction(lab) as con:
        for table, column, key, child in _child_tables(con):  # children first: they find their rows through the parent
            n = con.execute(f'DELETE FROM "{child}" WHERE "{key}" IN (SELECT "{key}" FROM "{table}" WHERE "{column}" = ?)',
                            [run_id]).fetchall()[0][0]
            deleted[child] = deleted.get(child, 0) + int(n)
        for table, column in _run_tables(con):
            n = con.execute(f'DELETE FROM "{table}" WHERE "{column}" = ?', [run_id]).fetchall()[0][0]
            deleted[table] = deleted.get(table, 0) + int(n)
        if con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'jobs'").fetchall()[0][0]:
            deleted["jobs"] = int(con.execute("DELETE FROM jobs WHERE job_id = ? AND status NOT IN ('QUEUED', 'RUNNING')",
                                              [run_id]).fetchall()[0][0])
    shutil.rmtree(lab.run_dir(run_id), ignore_errors=True)
    return deleted


def _check_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id in (".", ".."):
        raise LabError(f"'{run_id}' is not a run id: list runs with python -m engine sql \"SELECT run_id, name FROM runs\"")


def run_info(lab: Lab, run_id: str) -> dict[str, Any] | None:
    """The run's status and owner, and the status of the job that produced it (if any)."""
    df = query(lab, """SELECT r.run_id, r.status, r.owner_host, r.owner_pid, r.owner_started, r.heartbeat_at,
                                 j.status AS job_status
                            FROM runs r LEFT JOIN jobs j ON j.job_id = r.run_id WHERE r.run_id = ?""", [run_id])
    return None if df.empty else {k: (None if _missing(v) else v) for k, v in df.iloc[0].to_dict().items()}


def _missing(v: Any) -> bool:
    try:
        return v is None or bool(v != v)
    except (TypeError, ValueError):
        return False


def _who(owner: Owner | None) -> str:
    return owner.describe() if owner else "the process that ran it"


def _end_failed(lab: Lab, run_id: str, error: str) -> bool:
    """RUNNING -> FAILED for the run and its job, in one transaction; False if it was no longer RUNNING."""
    now = utcnow()
    with transaction(lab) as con:
        n = con.execute("UPDATE runs SET status = 'FAILED', ended_at = ?, error = ? WHERE run_id = ? AND status = 'RUNNING'",
                        [now, error, run_id]).fetchall()[0][0]
        con.execute("UPDATE jobs SET status = 'FAILED', finished_at = ?, error = ?, phase = 'failed', eta_seconds = NULL "
                    "WHERE job_id = ? AND status IN ('QUEUED', 'RUNNING')", [now, error, run_id])
        con.execute("UPDATE workers SET current_job = NULL WHERE current_job = ?", [run_id])
    remove_temporary_files(lab.run_dir(run_id), checkpoint=True)
    return bool(n)


def mark_failed(lab: Lab, run_id: str) -> str:
    """End a RUNNING run whose process is gone as FAILED (and its job); returns the error recorded.

    Refuses an unknown run, a run that is not RUNNING, and a run whose process is alive (or runs on
    another machine, where this one cannot tell)."""
    _check_id(run_id)
    replay_spools(lab)  # rows a dead writer could not write (perhaps its own end) land first
    info = run_info(lab, run_id)
    if info is None:
        raise LabError(f"unknown run '{run_id}': list runs with python -m engine sql \"SELECT run_id, name, status FROM runs\"")
    if info["status"] != "RUNNING":
        raise LabError(f"run '{run_id}' is {info['status']}, not RUNNING: nothing to mark; "
                       f"delete it with python -m engine runs delete {run_id} if you no longer want it")
    owner = owner_of(info)
    alive = owner_alive(lab, run_id, owner)
    if alive:
        how = f"kill {owner.pid}" if owner else "stop that process"
        raise LabError(f"run '{run_id}' is still being run by {_who(owner)}, which is alive: stop it first "
                       f"(Ctrl-C in its terminal, {how}, or python -m engine cancel {run_id} for a sweep job), then retry")
    if alive is None:
        where = owner.host if owner else "the machine that runs it"
        raise LabError(f"run '{run_id}' is run by {_who(owner)}, another machine: this one cannot tell whether it is alive; "
                       f"run python -m engine runs mark-failed {run_id} on {where}")
    error = f"marked FAILED by hand: {_who(owner)} had stopped without recording an end"
    if not _end_failed(lab, run_id, error):
        raise LabError(f"run '{run_id}' ended while it was being marked: check it with python -m engine sql "
                       f"\"SELECT status, error FROM runs WHERE run_id = '{run_id}'\"")
    return error


def recover_orphaned_runs(lab: Lab) -> list[str]:
    """Mark FAILED every RUNNING run no live process owns and no active job holds; returns their ids.

    Cheap when there is nothing to do (one read); called whenever a command opens the lab for writing."""
    sql = """SELECT r.run_id, r.owner_host, r.owner_pid, r.owner_started FROM runs r LEFT JOIN jobs j ON j.job_id = r.run_id
             WHERE r.status = 'RUNNING' AND coalesce(j.status, '') NOT IN ('QUEUED', 'RUNNING')"""
    if query(lab, sql).empty:
        return []
    replay_spools(lab)
    out = []
    for row in query(lab, sql).to_dict("records"):
        owner = owner_of({k: (None if _missing(v) else v) for k, v in row.items()})
        if owner_alive(lab, row["run_id"], owner) is False:
            error = (f"{_who(owner)} stopped without recording how the run ended (killed, crashed, or the disk was full); "
                     "marked FAILED when the lab was next opened for writing")
            if _end_failed(lab, row["run_id"], error):
                out.append(row["run_id"])
    return out
