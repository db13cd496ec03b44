"""The SQL a person types can read the lab and never change it."""

from __future__ import annotations

import hashlib

import pytest

import db
from core.errors import LabError
from core.lab import Lab
from db.readonly import check_read_only, run_readonly


@pytest.fixture
def small_db(tmp_path):
    lab = Lab.at(tmp_path)
    db.ensure_schema(lab)
    with db.transaction(lab) as con:
        con.execute("INSERT INTO step_metrics VALUES ('r', 1, 10, 'loss', 0.5, now()::TIMESTAMP)")
    return lab


def digest(lab: Lab) -> str:
    return hashlib.sha256(lab.db.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE step_metrics",
        "DELETE FROM step_metrics",
        "INSERT INTO step_metrics VALUES ('r', 2, 20, 'loss', 0.4, now())",
        "UPDATE step_metrics SET value = 0",
        "ATTACH '/tmp/evil.duckdb' AS evil",
        "COPY step_metrics TO '/tmp/leak.csv'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "CREATE TABLE t AS SELECT 1",
        "SELECT 1; DROP TABLE step_metrics",
        "SET enable_external_access = true",
        "EXPORT DATABASE '/tmp/out'",
    ],
)
def test_writes_are_refused_and_the_lab_is_unchanged(small_db, sql):
    before = digest(small_db)
    with pytest.raises(LabError, match="not allowed|read-only"):
        run_readonly(small_db, sql)
    assert digest(small_db) == before
    assert db.query_rows(small_db, "SELECT count(*) FROM step_metrics")[0][0] == 1


def test_file_access_is_blocked_even_inside_a_select(small_db, tmp_path):
    (tmp_path / "secret.csv").write_text("a\n1\n")
    with pytest.raises(LabError, match="query failed"):
        run_readonly(small_db, f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')")


def test_queries_work_and_errors_are_one_line(small_db):
    df = run_readonly(small_db, "SELECT name, value FROM step_metrics")
    assert list(df.columns) == ["name", "value"] and df.iloc[0]["value"] == 0.5
    assert len(run_readonly(small_db, "DESCRIBE runs")) > 10
    with pytest.raises(LabError) as e:
        run_readonly(small_db, "SELECT nope FROM step_metrics")
    assert "\n" not in str(e.value)
    with pytest.raises(LabError, match="empty query"):
        check_read_only("   ")


def test_slow_query_is_interrupted(small_db):
    with pytest.raises(LabError, match="longer than"):
        run_readonly(small_db, "SELECT count(*) FROM range(1000000000000) a", timeout_seconds=0.5)
