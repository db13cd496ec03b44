"""The Runs page's administration panel (mark a stuck run failed, delete a run, each after a
confirmation), and the app on a lab the user cannot write."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest
from streamlit.testing.v1 import AppTest

import db
from tests.helpers import (
    REPO,
    _drop_write_override,
    add_running_run,
    copy_lab,
    dead_process,
    make_read_only,
    make_writable,
    read_only_user_or_skip,
)

APP = str(REPO / "lab_app" / "app.py")


@pytest.fixture
def lab_copy(finished_lab, tmp_path):
    src, _config, outcomes = finished_lab
    return copy_lab(src.root, tmp_path / "lab"), outcomes


def runs_page(lab, monkeypatch) -> AppTest:
    monkeypatch.setenv("SAE_LAB_DIR", str(lab.root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/runs.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def pick(at: AppTest, run_id: str) -> AppTest:
    at.selectbox(key="admin_run").set_value(run_id).run()
    return at


def test_delete_needs_a_confirmation_then_removes_the_run(lab_copy, monkeypatch):
    lab, outcomes = lab_copy
    rid = outcomes[0].run_id
    at = pick(runs_page(lab, monkeypatch), rid)
    assert at.button(key="admin_delete").disabled and at.button(key="admin_mark_failed").disabled  # not yet confirmed
    at.checkbox(key="admin_confirm").check().run()
    assert not at.button(key="admin_delete").disabled and at.button(key="admin_mark_failed").disabled  # FINISHED: nothing to mark
    at.button(key="admin_delete").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert db.query_rows(lab, "SELECT count(*) FROM runs WHERE run_id = ?", [rid])[0][0] == 0
    assert not lab.run_dir(rid).exists()
    assert any(f"Run {rid} deleted" in s.value for s in at.success)
    assert rid not in at.dataframe[0].value["run_id"].tolist()


def test_mark_failed_ends_a_stuck_run_and_refuses_a_live_one(lab_copy, monkeypatch):
    lab, _ = lab_copy
    pid, started = dead_process()
    add_running_run(lab, "stuck-1", pid, started)
    me = psutil.Process()
    add_running_run(lab, "alive-1", me.pid, me.create_time())  # this very process: alive

    at = pick(runs_page(lab, monkeypatch), "stuck-1")
    assert any("is gone" in c.value for c in at.caption)
    at.checkbox(key="admin_confirm").check().run()
    at.button(key="admin_mark_failed").click().run()
    assert db.query_rows(lab, "SELECT status FROM runs WHERE run_id = 'stuck-1'")[0][0] == "FAILED"
    assert any("Run stuck-1 marked FAILED" in s.value for s in at.success)
    assert not (lab.run_dir("stuck-1") / "checkpoint.tmp").exists()

    pick(at, "alive-1")
    assert any("which is alive" in c.value for c in at.caption)
    at.checkbox(key="admin_confirm").check().run()
    at.button(key="admin_mark_failed").click().run()
    assert [e.value for e in at.error] and "still being run by" in at.error[0].value
    assert db.query_rows(lab, "SELECT status FROM runs WHERE run_id = 'alive-1'")[0][0] == "RUNNING"


APP_SCRIPT = """
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=180)
if sys.argv[2] != "-":
    at.switch_page(sys.argv[2])
at.run()
print("EXCEPTIONS", [e.value for e in at.exception])
print("ERRORS", [e.value for e in at.error])
print("TITLES", [t.value for t in at.title])
"""


@pytest.fixture(scope="module")
def read_only_lab(finished_lab, tmp_path_factory):
    read_only_user_or_skip()
    src, _config, _ = finished_lab
    lab = copy_lab(src.root, tmp_path_factory.mktemp("ro-app") / "lab")
    make_read_only(lab.root)
    yield lab
    make_writable(lab.root)


@pytest.mark.parametrize(("page", "title"), [("-", "Lab notebook"), ("views/runs.py", "Runs"), ("views/sql.py", None)])
def test_the_app_opens_a_lab_the_user_cannot_write(read_only_lab, page, title):
    lab = read_only_lab
    before = {p: p.read_bytes() for p in lab.root.rglob("*") if p.is_file()}
    env = {**os.environ, "SAE_LAB_DIR": str(lab.root), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", APP_SCRIPT, APP, page], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600, preexec_fn=_drop_write_override if os.geteuid() == 0 else None)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "EXCEPTIONS []" in r.stdout and "ERRORS []" in r.stdout, r.stdout[-2000:]
    if title:
        assert f"'{title}'" in r.stdout
    assert {p: p.read_bytes() for p in lab.root.rglob("*") if p.is_file()} == before
