"""Versioned schema migrations, recorded in ``schema_migrations``.

DuckDB has no migration tool; each ``db/migrations/NNNN_name.sql`` file is applied once, in order,
inside a transaction together with its row in ``schema_migrations``, so a crash mid-migration
leaves the previous version intact.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.lab import Lab
from db.connection import connect

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_checked: set[Path] = set()


def available_migrations() -> list[tuple[int, str, str]]:
    out = []
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = re.match(r"(\d+)_(.+)\.sql$", f.name)
        if m:
            out.append((int(m.group(1)), m.group(2), f.read_text(encoding="utf-8")))
    return out


def ensure_schema(lab: Lab) -> int:
    """Apply any missing migrations; return the schema version. Cheap after the first call."""
    path = lab.db.resolve()
    latest = available_migrations()[-1][0]
    if path in _checked and path.exists():
        return latest
    with connect(lab) as con:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
        done = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, name, sql in available_migrations():
            if version in done:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(sql)
                con.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)", [version, name]
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    _checked.add(path)
    return latest
