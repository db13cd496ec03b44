"""Helpers of the findings tests (import as ``from tests.findings.helpers import ...``)."""

from __future__ import annotations

import db


def fingerprint(lab, exclude: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """(row count, order-independent hash of all rows) of every table: equal means unchanged."""
    with db.connect(lab, read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall()]
        return {t: tuple(con.execute(f'SELECT count(*), coalesce(sum(hash(x)::HUGEINT), 0) FROM "{t}" x').fetchall()[0])
                for t in tables if t not in exclude}
