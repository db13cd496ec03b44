"""What every CLI command does with the lab before its own work: check the path, then read or write.

A command either only reads the lab (``sql``, ``sweep-status``, ``findings list/show/export``, ...:
their parsers set ``read_only=True``) or may write it. Reading never needs write access: the
schema is checked on a read-only connection and only an out-of-date schema is migrated (which
needs write access, and says so in one line when it is missing). A command that may write first
checks that it can, so a folder the user cannot write ends in one line before any work is done,
and then cleans up after processes that died: rows they spooled are replayed, their RUNNING runs
are marked FAILED, their temporary collection folders removed.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import LabError
from core.lab import Lab
from db import ensure_schema
from engine.run_admin import recover_orphaned_runs
from engine.run_owner import remove_dead_collection_folders

READ_ONLY_HINT = "read-only commands (sql, sweep-status, findings list/show/export) still work"


def nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_lab_path(lab: Lab) -> None:
    """--lab must be a folder, or a path whose nearest existing part is a folder."""
    root = lab.root
    if root.exists() and not root.is_dir():
        raise LabError(f"--lab {root} is a file, not a folder: point --lab at a lab folder (or at a new folder name to create "
                       "one)")
    p = nearest_existing(root)
    if p.exists() and not p.is_dir():
        raise LabError(f"--lab {root} lies inside {p}, which is a file: point --lab at a folder")


def check_writable(lab: Lab) -> None:
    """An existing lab (its folder, database and subfolders) must be writable by this user."""
    if not lab.root.is_dir():
        return  # created by the command; a parent it cannot write ends as one line from the CLI
    for path in (lab.root, lab.runs, lab.activations):
        if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
            raise LabError(f"the lab folder {path} is not writable by this user: make it writable (chmod u+w / chown), "
                           f"or point --lab at a lab you can write; {READ_ONLY_HINT}")
    if lab.db.exists() and not os.access(lab.db, os.W_OK):
        raise LabError(f"the lab database {lab.db} is not writable by this user: make it writable (chmod u+w / chown); "
                       f"{READ_ONLY_HINT}")


def open_lab(lab: Lab, read_only: bool, recover: bool = True) -> list[str]:
    """Prepare the lab for a command; returns notes to show (runs marked FAILED after their process died).

    ``recover=False`` is for the commands that report on stuck runs themselves (``cancel``, ``runs``)."""
    check_lab_path(lab)
    if not read_only:
        check_writable(lab)
    if not lab.db.exists():
        return []
    ensure_schema(lab)  # a read when the schema is current; migrates (a write) only an older one
    if read_only or not recover:
        return []

    remove_dead_collection_folders(lab)
    return [f"run {rid} was RUNNING but its process is gone: marked FAILED (see its error in the runs table)"
            for rid in recover_orphaned_runs(lab)]
