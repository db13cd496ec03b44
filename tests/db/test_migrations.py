"""Migrations run only when needed: a current lab is only read (so a lab the user cannot write can
be read), an older one is upgraded when it can be written, and refused in one line when it cannot."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import db
from core.lab import Lab
from tests.helpers import REPO, _drop_write_override, make_read_only, make_writable, read_only_user_or_skip


def digest(lab: Lab) -> str:
    return hashlib.sha256(lab.db.read_bytes()).hexdigest()


def older_lab(lab: Lab) -> Lab:
    """A lab last written before migration 6 (the run_metrics view)."""
    db.ensure_schema(lab)
    with db.connect(lab) as con:
        con.execute("DROP VIEW run_metrics")
        con.execute("DELETE FROM schema_migrations WHERE version = 6")
    db.migrations._checked.clear()
    return lab


def test_a_current_lab_is_only_read(tmp_path):
    lab = Lab.at(tmp_path)
    db.ensure_schema(lab)
    db.migrations._checked.clear()
    mtime, before = lab.db.stat().st_mtime_ns, digest(lab)
    assert db.ensure_schema(lab) == db.migrations.latest_version()
    assert lab.db.stat().st_mtime_ns == mtime and digest(lab) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.duckdb"]  # no WAL: never opened for writing


def test_an_older_lab_is_upgraded_when_it_can_be_written(tmp_path):
    lab = older_lab(Lab.at(tmp_path))
    assert 6 not in db.migrations.applied_versions(lab)
    db.ensure_schema(lab)
    assert db.migrations.applied_versions(lab) == {v for v, _, _ in db.migrations.available_migrations()}
    assert db.query_rows(lab, "SELECT count(*) FROM run_metrics")[0][0] == 0


SCRIPT = """
import sys
import db
from core.errors import LabError
from core.lab import Lab
try:
    db.ensure_schema(Lab.at(sys.argv[1]))
    print("OK", db.query_rows(Lab.at(sys.argv[1]), "SELECT count(*) FROM runs")[0][0])
except LabError as e:
    print("LabError:", e)
"""


def as_read_only_user(lab: Lab) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(lab.root)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=_drop_write_override if __import__("os").geteuid() == 0 else None)


def test_an_older_lab_that_cannot_be_written_is_refused_in_one_line(tmp_path):
    read_only_user_or_skip()
    lab = older_lab(Lab.at(tmp_path / "lab"))
    before = digest(lab)
    make_read_only(lab.root)
    try:
        r = as_read_only_user(lab)
    finally:
        make_writable(lab.root)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith(f"LabError: the lab database {lab.db.resolve()} predates this code "
                           "(it lacks schema migration 6 (run_metrics))") and "\n" not in line
    assert digest(lab) == before


def test_a_current_lab_that_cannot_be_written_is_read(tmp_path):
    read_only_user_or_skip()
    lab = Lab.at(tmp_path / "lab")
    db.ensure_schema(lab)
    make_read_only(lab.root)
    try:
        r = as_read_only_user(lab)
    finally:
        make_writable(lab.root)
    assert r.returncode == 0 and r.stdout.strip() == "OK 0", (r.stdout, r.stderr)
