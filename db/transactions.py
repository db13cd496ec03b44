"""One write transaction on an up-to-date schema: how every write reaches the lab database.

Apart from ``db.connection`` (which opens the file) and ``db.migrations`` (which uses it), so the
schema is brought up to date before the first write without the two importing each other.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import duckdb

from core.errors import disk_full_error, is_disk_full
from core.lab import Lab
from db.connection import connect
from db.migrations import ensure_schema


@contextmanager
def transaction(lab: Lab, *, wait_seconds: float = 30.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """One write transaction: all of it lands or none of it does."""
    ensure_schema(lab)
    with connect(lab, wait_seconds=wait_seconds) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException as e:
            _rollback(con)
            if isinstance(e, duckdb.Error) and is_disk_full(e):
                raise disk_full_error(lab.db) from None
            raise


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back what is left of a transaction (nothing, when COMMIT itself failed)."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass
