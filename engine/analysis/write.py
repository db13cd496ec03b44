"""Writing a run's analysis: every table replaced in one transaction.

A reader (the app, another process) sees either the previous analysis or the new one, never a
mix: the old rows are deleted and the new ones inserted inside a single DuckDB transaction.
Rows arrive as Arrow tables inserted with one INSERT ... SELECT each (no Python loop per row).
"""

from __future__ import annotations

from typing import Callable

import pyarrow as pa

from core.lab import Lab
from db import transaction

# Child tables first, analysis_runs last: its row is what marks an analysis as complete.
TABLES = ("features", "feature_domain_stats", "feature_context_rows", "feature_neighbours", "feature_token_effects", "clusters",
          "concept_results")


def replace_analysis(lab: Lab, run_id: str, tables: dict[str, pa.Table], final_row: Callable[[], pa.Table],
                     sequences: dict[str, Callable[[], pa.Table]] | None = None, wait_seconds: float = 60.0) -> None:
    """Replace the run's rows; ``final_row`` builds the ``analysis_runs`` row last, inside the
    transaction, so the seconds it records include the write. ``sequences`` builds the token
    strings of each activation set the database does not hold yet (shared by runs, never deleted)."""
    with transaction(lab, wait_seconds=wait_seconds) as con:
        con.execute("SET enable_progress_bar = false")  # DuckDB draws one on stdout for writes over 2 s
        for key, build in (sequences or {}).items():
            if not con.execute("SELECT count(*) FROM token_sequences WHERE activation_set = ?", [key]).fetchall()[0][0]:
                _insert(con, "token_sequences", build())
        con.execute("DELETE FROM analysis_runs WHERE run_id = ?", [run_id])
        for name in TABLES:
            con.execute(f'DELETE FROM "{name}" WHERE run_id = ?', [run_id])
        for name in TABLES:
            _insert(con, name, tables.get(name))
        _insert(con, "analysis_runs", final_row())


def _insert(con, name: str, table: pa.Table | None) -> None:
    if table is None or table.num_rows == 0:
        return
    view = f"_analysis_{name}"
    con.register(view, table)
    try:
        cols = ", ".join(f'"{c}"' for c in table.column_names)
        con.execute(f'INSERT INTO "{name}" ({cols}) SELECT {cols} FROM {view}')
    finally:
        con.unregister(view)


def delete_analysis(lab: Lab, run_id: str) -> None:
    with transaction(lab) as con:
        con.execute("DELETE FROM analysis_runs WHERE run_id = ?", [run_id])
        for name in TABLES:
            con.execute(f'DELETE FROM "{name}" WHERE run_id = ?', [run_id])
