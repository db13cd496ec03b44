"""Storage: the only package that opens the lab's DuckDB file (schema, migrations, connections)."""

from db.connection import connect, query, query_rows
from db.migrations import ensure_schema
from db.transactions import transaction
from db.writer import BufferedWriter, Op, replay_spools, utcnow, write_now

__all__ = [
    "BufferedWriter",
    "Op",
    "connect",
    "ensure_schema",
    "query",
    "query_rows",
    "replay_spools",
    "transaction",
    "utcnow",
    "write_now",
]
