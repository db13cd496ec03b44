"""Storage: the only package that opens the lab's DuckDB file (schema, migrations, connections)."""

from db.connection import connect, query, query_rows
from db.migrations import ensure_schema
from db.run_rows import RunRows, export_run_rows, land_run_rows
from db.transactions import transaction
from db.writer import BufferedWriter, Op, apply_ops, replay_spools, spool_of, utcnow, write_now

__all__ = [
    "BufferedWriter",
    "Op",
    "RunRows",
    "apply_ops",
    "connect",
    "ensure_schema",
    "export_run_rows",
    "land_run_rows",
    "query",
    "query_rows",
    "replay_spools",
    "spool_of",
    "transaction",
    "utcnow",
    "write_now",
]
