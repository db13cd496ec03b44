"""A run's rows carried from one lab database to another: how a job run elsewhere lands in this lab.

A Ray task runs its job against a scratch lab of its own (a DuckDB file on its node) and never opens
the lab's database. ``export_run_rows`` reads what the job wrote there -- every table with a
``run_id`` column, and the token strings of its activation sets -- as Arrow tables (they travel
through Ray's object store as they are); ``land_run_rows`` writes them into the lab inside the
caller's transaction (the driver's, together with the job's status).

Landing is idempotent, so a retried task, a checkpoint's rows landed before the final ones, or a
re-attached driver never write a row twice:
- a table with a primary key is upserted (``INSERT OR REPLACE``): rows landed earlier with a
  checkpoint are kept, the same keys landed again are replaced by the newer values;
- the tables in ``replace_together`` (a run's feature analysis) are written as one set: when any
  of them arrives, the run's old rows in all of them go first, as ``replace_analysis`` does;
- a table without a key is replaced per run (its run's rows deleted, then inserted);
- ``token_sequences`` is shared by every run of an activation set: inserted only when absent.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import duckdb
import pyarrow as pa

from core.lab import Lab
from db.connection import connect

RUN_KEY = "run_id"
# Tables keyed by something shared between runs: name -> key column; rows are inserted when absent.
SHARED = {"token_sequences": "activation_set"}

RunRows = dict[str, pa.Table]


def run_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The base tables (not views) with a ``run_id`` column."""
    rows = con.execute(
        "SELECT c.table_name FROM duckdb_columns() c JOIN duckdb_tables() t USING (schema_name, table_name) "
        "WHERE c.column_name = ? AND c.schema_name = 'main' ORDER BY c.table_name", [RUN_KEY]
    ).fetchall()
    return [r[0] for r in rows]


def export_run_rows(lab: Lab, run_id: str, tables: Iterable[str] | None = None, since_step: int | None = None,
                    shared: bool = True) -> RunRows:
    """The run's rows in ``lab`` (a task's scratch lab), by table; empty tables are left out.

    ``tables`` limits the export (e.g. to ``runs`` and ``step_metrics`` for a checkpoint);
    ``since_step`` keeps only step metrics after that step (what an earlier export did not carry)."""
    out: RunRows = {}
    with connect(lab, read_only=True) as con:
        names = list(tables) if tables is not None else run_tables(con)
        for name in names:
            sql, params = f'SELECT * FROM "{name}" WHERE {RUN_KEY} = ?', [run_id]
            if name == "step_metrics" and since_step is not None:
                sql, params = sql + " AND step > ?", [run_id, since_step]
            table = con.sql(sql, params=params).to_arrow_table()
            if table.num_rows:
                out[name] = table
        if shared and tables is None:
            existing = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
            for name in SHARED:
                # A scratch lab holds one run's activation sets: all of its shared rows are the run's.
                if name in existing:
                    table = con.sql(f'SELECT * FROM "{name}"').to_arrow_table()
                    if table.num_rows:
                        out[name] = table
    return out


def with_values(table: pa.Table, values: Mapping[str, Any]) -> pa.Table:
    """``table`` with the named columns set to one value in every row (e.g. a run's owner)."""
    for name, value in values.items():
        i = table.schema.get_field_index(name)
        if i < 0:
            continue
        field = table.schema.field(i)
        table = table.set_column(i, field, pa.array([value] * table.num_rows, type=field.type))
    return table


def _schema(con: duckdb.DuckDBPyConnection, tables: list[str]) -> tuple[dict[str, set[str]], set[str]]:
    """The columns of each table, and the tables that have a primary key (two queries for all)."""
    columns: dict[str, set[str]] = {t: set() for t in tables}
    for table, column in con.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main' "
                                     "AND table_name IN (SELECT unnest(?))", [tables]).fetchall():
        columns[table].add(column)
    keyed = {r[0] for r in con.execute("SELECT DISTINCT table_name FROM duckdb_constraints() WHERE constraint_type = "
                                       "'PRIMARY KEY' AND table_name IN (SELECT unnest(?))", [tables]).fetchall()}
    return columns, keyed


def _run_ids(table: pa.Table) -> list[str]:
    return sorted({str(v) for v in table.column(RUN_KEY).to_pylist()})


def land_run_rows(con: duckdb.DuckDBPyConnection, rows: Mapping[str, pa.Table], replace_together: Iterable[str] = (),
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> int:
    """Write exported rows inside the caller's open transaction; returns the rows written.

    ``overrides`` sets columns per table (the driver makes itself the owner of a ``runs`` row: it
    is the process answerable for the run in this lab)."""
    group = [t for t in replace_together]
    written = 0
    arriving = [rows[t] for t in group if t in rows]
    if arriving:
        ids = sorted({i for t in arriving for i in _run_ids(t)})
        for name in group:
            con.execute(f'DELETE FROM "{name}" WHERE {RUN_KEY} IN (SELECT unnest(?))', [ids])
    columns, keyed = _schema(con, list(rows))
    for n, (name, table) in enumerate(rows.items()):
        if table.num_rows == 0:
            continue
        table = with_values(table, (overrides or {}).get(name, {}))
        cols = [c for c in table.column_names if c in columns[name]]  # a node on other code: the columns both know
        if not cols:
            continue
        col_list = ", ".join(f'"{c}"' for c in cols)
        view = f"_landing_{n}"
        con.register(view, table.select(cols))
        try:
            if name in SHARED:
                key = SHARED[name]
                con.execute(f'INSERT INTO "{name}" ({col_list}) SELECT {col_list} FROM {view} '
                            f'WHERE "{key}" NOT IN (SELECT DISTINCT "{key}" FROM "{name}")')
            elif name in group:
                con.execute(f'INSERT INTO "{name}" ({col_list}) SELECT {col_list} FROM {view}')
            elif name in keyed:
                con.execute(f'INSERT OR REPLACE INTO "{name}" ({col_list}) SELECT {col_list} FROM {view}')
            else:
                con.execute(f'DELETE FROM "{name}" WHERE {RUN_KEY} IN (SELECT unnest(?))', [_run_ids(table)])
                con.execute(f'INSERT INTO "{name}" ({col_list}) SELECT {col_list} FROM {view}')
        finally:
            con.unregister(view)
        written += table.num_rows
    return written
