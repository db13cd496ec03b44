"""Migrations run only when needed: a current lab is only read (so a lab the user cannot write can
be read), an older one is upgraded when it can be written, and refused in one line when it cannot."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import db
from tests.helpers import REPO, _drop_write_override, make_read_only, make_writable, read_only_user_or_skip


def digest(path) -> str:
    return hashlib.sha256((path / "lab.duckdb").read_bytes()).hexdigest()


def older_lab(path):
    """A lab last written before migration 6 (the run_metrics view)."""
    db.ensure_schema(path)
    with db.connect(path) as con:
        con.execute("DROP VIEW run_metrics")
        con.execute("DELETE FROM schema_migrations WHERE version = 6")
    db.migrations._checked.clear()
    return path


def test_a_current_lab_is_only_read(tmp_path):
    db.ensure_schema(tmp_path)
    db.migrations._checked.clear()
    mtime, before = (tmp_path / "lab.duckdb").stat().st_mtime_ns, digest(tmp_path)
    assert db.ensure_schema(tmp_path) == db.migrations.latest_version()
    assert (tmp_path / "lab.duckdb").stat().st_mtime_ns == mtime and digest(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.duckdb"]  # no WAL: never opened for writing


def test_an_older_lab_is_upgraded_when_it_can_be_written(tmp_path):
    lab = older_lab(tmp_path)
    assert 6 not in db.migrations.applied_versions(lab)
    db.ensure_schema(lab)
    assert db.migrations.applied_versions(lab) == {v for v, _, _ in db.migrations.available_migrations()}
    assert db.query_rows(lab, "SELECT count(*) FROM run_metrics")[0][0] == 0


SCRIPT = """
import sys
import db
from engine.errors import LabError
try:
    db.ensure_schema(sys.argv[1])
    print("OK", db.query_rows(sys.argv[1], "SELECT count(*) FROM runs")[0][0])
except LabError as e:
    print("LabError:", e)
"""


def as_read_only_user(lab) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(lab)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=_drop_write_override if __import__("os").geteuid() == 0 else None)


def test_an_older_lab_that_cannot_be_written_is_refused_in_one_line(tmp_path):
    read_only_user_or_skip()
    lab = older_lab(tmp_path / "lab")
    before = digest(lab)
    make_read_only(lab)
    try:
        r = as_read_only_user(lab)
    finally:
        make_writable(lab)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith(f"LabError: the lab database {(lab / 'lab.duckdb').resolve()} predates this code "
                           "(it lacks schema migration 6 (run_metrics))") and "\n" not in line
    assert digest(lab) == before


def test_a_current_lab_that_cannot_be_written_is_read(tmp_path):
    read_only_user_or_skip()
    db.ensure_schema(tmp_path / "lab")
    make_read_only(tmp_path / "lab")
    try:
        r = as_read_only_user(tmp_path / "lab")
    finally:
        make_writable(tmp_path / "lab")
    assert r.returncode == 0 and r.stdout.strip() == "OK 0", (r.stdout, r.stderr)
