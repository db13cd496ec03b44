"""Versioned schema migrations, recorded in ``schema_migrations``.

DuckDB has no migration tool; each ``db/migrations/NNNN_name.sql`` file is applied once, in order,
inside a transaction together with its row in ``schema_migrations``, so a crash mid-migration
leaves the previous version intact.

A lab whose schema is already current is never opened for writing here: the version is read on a
read-only connection first, so read-only commands and the app work on a lab the user cannot write.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from core.errors import LabError
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


def latest_version() -> int:
    return available_migrations()[-1][0]


def applied_versions(lab: Lab) -> set[int]:
    """The migrations an existing lab database has had, read without writing."""
    with connect(lab, read_only=True) as con:
        has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_migrations'").fetchall()[0][0]
        if not has:
            return set()
        return {int(v) for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}


def writable(lab: Lab) -> bool:
    """Whether this process may write the lab database (the file and its folder, for the WAL)."""
    path = lab.db
    folder_ok = os.access(path.parent, os.W_OK | os.X_OK)
    return folder_ok and (not path.exists() or os.access(path, os.W_OK))


def ensure_schema(lab: Lab) -> int:
    """Apply any missing migrations; return the schema version. Cheap after the first call.

    A lab whose schema is current is only *read* here, so reading a lab never needs write access;
    the database is opened for writing only to create it or to apply a migration."""
    path = lab.db.resolve()
    latest = latest_version()
    if path in _checked and path.exists():
        return latest
    if path.exists():
        applied = applied_versions(lab)
        missing = [(v, name) for v, name, _ in available_migrations() if v not in applied]
        if not missing:
            _checked.add(path)
            return latest
        if not writable(lab):
            names = ", ".join(f"{v} ({name})" for v, name in missing)
            raise LabError(
                f"the lab database {path} predates this code (it lacks schema migration {names}), but this user "
                "cannot write it to upgrade it: run any `python -m engine` command on the lab once as a user who "
                "can write it (that upgrades it), or copy the lab to a folder you can write and use --lab"
            )
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
