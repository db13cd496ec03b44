"""delete_run: a run's rows leave every table that names it, its folder goes, shared data stays."""

from __future__ import annotations

import pytest

import db
from core.errors import LabError
from tests.helpers import copy_lab


def test_delete_run_removes_the_run_everywhere_and_nothing_shared(finished_lab, tmp_path):
    from engine.run_admin import delete_run

    src, _config, outcomes = finished_lab
    lab = copy_lab(src.root, tmp_path / "lab")
    gone, kept = outcomes[0].run_id, outcomes[1].run_id
    with db.transaction(lab) as con:  # a parent keyed by its own id, and its child (as interventions have)
        con.execute("CREATE TABLE t_parent (parent_id VARCHAR PRIMARY KEY, run_id VARCHAR)")
        con.execute("CREATE TABLE t_child (parent_id VARCHAR, x INTEGER)")
        con.execute("INSERT INTO t_parent VALUES ('p1', ?), ('p2', ?)", [gone, kept])
        con.execute("INSERT INTO t_child VALUES ('p1', 1), ('p1', 2), ('p2', 3)")
    tables = [r[0] for r in db.query_rows(lab, "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'run_id' "
                                                    "AND table_name IN (SELECT table_name FROM duckdb_tables())")]
    before = {t: db.query_rows(lab, f'SELECT count(*) FILTER (run_id = ?), count(*) FROM "{t}"', [gone])[0] for t in tables}
    shared = db.query_rows(lab, "SELECT (SELECT count(*) FROM token_sequences), (SELECT count(*) FROM activation_sets)")
    assert before["runs"][0] == 1 and before["features"][0] > 0 and before["step_metrics"][0] > 0

    deleted = delete_run(lab, gone)
    for t in tables:
        mine, total = before[t]
        assert db.query_rows(lab, f'SELECT count(*) FILTER (run_id = ?), count(*) FROM "{t}"', [gone])[0] == (0, total - mine), t
        assert deleted.get(t, 0) == mine
    assert db.query_rows(lab, "SELECT (SELECT count(*) FROM token_sequences), (SELECT count(*) FROM activation_sets)") == shared
    assert not lab.run_dir(gone).exists() and lab.run_dir(kept).exists()
    assert db.query_rows(lab, "SELECT * FROM t_child") == [("p2", 3)] and deleted["t_child"] == 2
    assert db.query_rows(lab, "SELECT count(*) FROM features WHERE run_id = ?", [kept])[0][0] > 0

    with pytest.raises(LabError, match=f"unknown run '{gone}'"):
        delete_run(lab, gone)
    with pytest.raises(LabError, match="is not a run id"):
        delete_run(lab, "../x")
