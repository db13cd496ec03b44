"""Deleting a run: its rows in every table and its folder, in one transaction.

Tables are found by their columns (``run_id``, and ``run_a``/``run_b`` of matches; the job that
produced the run shares its id), so a table added by a later migration is covered without
editing this file. A child table that names a run only through its parent's one-column primary
key (``intervention_token_movers.intervention_id`` -> ``interventions``) loses the rows of the
deleted parents too. Two kinds of rows stay: what outlives a run by design (findings cards and
their frozen evidence, which refer to run ids as plain text), and what runs share (activation
sets, token sequences).
"""

from __future__ import annotations

import shutil
from typing import Any

from db import connect, transaction
from core.errors import LabError
from core.lab import Lab

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
    if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id in (".", ".."):
        raise LabError(f"'{run_id}' is not a run id: list runs with python -m engine sql \"SELECT run_id, name FROM runs\"")
    with connect(lab, read_only=True) as con:
        row = con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not row:
        raise LabError(f"unknown run '{run_id}': list runs with python -m engine sql \"SELECT run_id, name FROM runs\"")
    if row[0][0] == "RUNNING":
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
