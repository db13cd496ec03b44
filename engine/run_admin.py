"""Deleting a run: its rows in every table and its folder, in one transaction.

Tables are found by their columns (``run_id``, and ``run_a``/``run_b`` of matches; the job that
produced the run shares its id), so a table added by a later migration is covered without
editing this file. Two kinds of rows stay: what outlives a run by design (findings cards and
their frozen evidence, which refer to run ids as plain text), and what runs share (activation
sets, token sequences). A table whose rows hang off a run only through another id (a child
table keyed by its parent's id) is its owner's to cascade.
"""

from __future__ import annotations

import shutil
from typing import Any

from db import connect, transaction
from engine.errors import LabError
from engine.lab import Lab

# Records that must survive the run they mention (findings/: cards keep their evidence).
KEEP_TABLES = frozenset({"findings", "finding_revisions", "finding_features", "finding_evidence", "evidence_snapshots"})


def _run_tables(con) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT c.table_name, c.column_name FROM duckdb_columns() c JOIN duckdb_tables() t "
        "ON t.table_name = c.table_name AND t.schema_name = c.schema_name "
        "WHERE c.column_name IN ('run_id', 'run_a', 'run_b') ORDER BY c.table_name, c.column_name").fetchall()
    return [(t, c) for t, c in rows if t not in KEEP_TABLES]


def delete_run(lab: Lab, run_id: str) -> dict[str, Any]:
    """Delete a finished, failed or killed run everywhere; returns rows deleted per table.

    Refuses a run that is still RUNNING (its process would write again) and an unknown run."""
    if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id in (".", ".."):
        raise LabError(f"'{run_id}' is not a run id: list runs with python -m engine sql \"SELECT run_id, name FROM runs\"")
    with connect(lab.root, read_only=True) as con:
        row = con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not row:
        raise LabError(f"unknown run '{run_id}': list runs with python -m engine sql \"SELECT run_id, name FROM runs\"")
    if row[0][0] == "RUNNING":
        raise LabError(f"run '{run_id}' is still RUNNING: cancel it (python -m engine cancel {run_id}) and wait for it to stop")
    deleted: dict[str, int] = {}
    with transaction(lab.root) as con:
        for table, column in _run_tables(con):
            n = con.execute(f'DELETE FROM "{table}" WHERE "{column}" = ?', [run_id]).fetchall()[0][0]
            deleted[table] = deleted.get(table, 0) + int(n)
        if con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'jobs'").fetchall()[0][0]:
            deleted["jobs"] = int(con.execute("DELETE FROM jobs WHERE job_id = ? AND status NOT IN ('QUEUED', 'RUNNING')",
                                              [run_id]).fetchall()[0][0])
    shutil.rmtree(lab.run_dir(run_id), ignore_errors=True)
    return deleted
