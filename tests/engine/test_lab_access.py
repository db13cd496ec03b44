"""Where the lab is and who may write it: one line for a bad --lab, read-only use of a read-only lab.

The read-only cases run the CLI as a user the file permissions apply to (as root: a child process
without CAP_DAC_OVERRIDE), on a lab whose folders are 0o555 and files 0o444.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import db
from tests.helpers import (
    copy_lab,
    error_lines,
    make_read_only,
    make_writable,
    read_only_user_or_skip,
    run_cli,
    run_cli_read_only_user,
)


def snapshot(root: Path) -> dict[str, str]:
    """Every file of the lab with a hash of its bytes: equal means nothing was written."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args", [["sql", "SELECT 1"], ["train"], ["findings", "list"], ["runs", "delete", "x"]])
def test_lab_path_that_is_a_file_is_one_line(tmp_path, args):
    f = tmp_path / "notes.txt"
    f.write_text("not a lab")
    for lab, words in ((f, "is a file, not a folder"), (f / "sub", "which is a file")):
        r = run_cli(*args, lab=lab)
        lines = error_lines(r)
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --lab "), r.stderr
        assert words in lines[0] and str(f) in lines[0]
    assert f.read_text() == "not a lab" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.fixture(scope="module")
def read_only_lab(finished_lab, tmp_path_factory):
    """A copy of the shared lab with a sweep and a findings card, then made read-only."""
    from engine.sweeps.queue import enqueue_sweep
    from engine.sweeps.spec import SweepSpec
    from findings.prefill import card_from_feature

    read_only_user_or_skip()
    src, _config, outcomes = finished_lab
    lab = copy_lab(src.root, tmp_path_factory.mktemp("ro") / "lab")
    run_id = outcomes[0].run_id
    enqueue_sweep(lab, SweepSpec.from_dict({"name": "ro", "parameters": {"k": [4, 8]}, "base": {"sae": {"d_sae": 64}}}))
    feature = db.query_rows(lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead ORDER BY feature LIMIT 1",
                            [run_id])[0][0]
    card = card_from_feature(lab, run_id, feature, author="t")
    make_read_only(lab.root)
    yield lab, run_id, feature, card.card_id
    make_writable(lab.root)


READS = {
    "sql": (["sql", "SELECT count(*) AS n FROM runs"], "(1 row)"),
    "sweep-status": (["sweep-status"], "(ro, grid): 4 QUEUED"),
    "findings list": (["findings", "list"], "CARD"),
    "findings show": (["findings", "show", "CARD"], "revision 1"),
    "findings export": (["findings", "export", "--format", "json", "--out", "-"], '"cards"'),
    "feature": (["feature", "--run", "RUN", "FEATURE"], "feature FEATURE of run RUN"),
}


@pytest.mark.parametrize("name", list(READS))
def test_read_only_commands_work_on_a_lab_the_user_cannot_write(read_only_lab, name):
    lab, run_id, feature, card = read_only_lab
    args, expect = READS[name]
    fill = {"RUN": run_id, "CARD": card, "FEATURE": str(feature)}
    before = snapshot(lab.root)
    r = run_cli_read_only_user(*[fill.get(a, a) for a in args], lab=lab.root)
    assert r.returncode == 0, r.stderr
    for key, value in fill.items():
        expect = expect.replace(key, value)
    assert expect in r.stdout
    assert snapshot(lab.root) == before


@pytest.mark.parametrize("args", [["runs", "delete", "RUN"], ["train", "--set", "data.tokens_per_domain=2000"],
                                  ["findings", "delete", "CARD"]])
def test_a_write_to_a_read_only_lab_is_one_line_and_writes_nothing(read_only_lab, args):
    lab, run_id, _feature, card = read_only_lab
    before = snapshot(lab.root)
    r = run_cli_read_only_user(*[{"RUN": run_id, "CARD": card}.get(a, a) for a in args], lab=lab.root)
    lines = error_lines(r)
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: the lab folder {lab.root} is not writable by this user") and "sql" in lines[0]
    assert snapshot(lab.root) == before


def test_an_older_schema_on_a_read_only_lab_is_one_line(finished_lab, tmp_path):
    read_only_user_or_skip()
    src, _config, _ = finished_lab
    lab = copy_lab(src.root, tmp_path / "lab")
    with db.connect(lab) as con:  # as a lab last written before the run_metrics view existed
        con.execute("DROP VIEW run_metrics")
        con.execute("DELETE FROM schema_migrations WHERE version = 6")
    make_read_only(lab.root)
    try:
        before = snapshot(lab.root)
        r = run_cli_read_only_user("sql", "SELECT count(*) FROM runs", lab=lab.root)
        lines = error_lines(r)
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "lacks schema migration 6 (run_metrics)" in lines[0] and "cannot write it to upgrade it" in lines[0]
        assert str(lab.db.resolve()) in lines[0]
        assert snapshot(lab.root) == before
    finally:
        make_writable(lab.root)


def test_a_new_lab_in_a_folder_the_user_cannot_write_is_one_line(tmp_path):
    read_only_user_or_skip()
    parent = tmp_path / "shared"
    parent.mkdir()
    make_read_only(parent)
    try:
        r = run_cli_read_only_user("sweep", "layer-sweep", "--run-cap", "1", lab=parent / "lab")
    finally:
        make_writable(parent)
    lines = error_lines(r)
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: permission denied for {parent / 'lab'}") and "--lab" in lines[0]
    assert list(parent.iterdir()) == []
