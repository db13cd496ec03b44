"""The CLI end to end, and bad input refused with one line, a non-zero exit and nothing written."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import db
from core.lab import Lab
from tests.helpers import run_cli, small_overrides


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, tiny_neox):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "empty" / "a.txt").write_text("")
    (root / "tiny").mkdir()
    (root / "tiny" / "a.txt").write_text("just a handful of words")
    (root / "bad.json").write_text('{"sae": {"k": 16,,}}')
    broken = root / "nan-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_neox)
    with torch.no_grad():
        model.gpt_neox.layers[0].mlp.dense_4h_to_h.weight.fill_(float("inf"))
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_neox).save_pretrained(broken)
    small = sets(small_overrides(tokens=2000, layers="0,1"))
    return {
        "k<=0": (["run", "--k", "0"], "k must be at least 1"),
        "k>d_sae": (["run", "--k", "4096"], "larger than d_sae"),
        "layer out of range": (["run", "--layer", "9"], "layers 0 to 5"),
        "unknown hook": (["run", "--hook", "mlp_in"], "unknown hook point"),
        "unknown model folder": (["run", "--model", str(root / "nope")], "model path"),
        "hub name offline": (["run", "--model", "EleutherAI/pythia-70m-deduped"], "cannot be reached \\(offline\\)"),
        "empty corpus": (["run", "--domains", f"empty={root / 'empty'},prose", *small], "is empty"),
        "too-small corpus": (["run", "--domains", f"tiny={root / 'tiny'},prose", *small], "fewer than tokens_per_domain"),
        "NaN activations": (["run", "--model", str(broken), "--layer", "1", *small], "NaN or infinite"),
        "malformed config": (["run", "--config", str(root / "bad.json")], "not valid JSON"),
        "unknown key": (["run", "--set", "sae.kk=3"], "unknown config key"),
    }


CASES = ["k<=0", "k>d_sae", "layer out of range", "unknown hook", "unknown model folder", "hub name offline",
         "empty corpus", "too-small corpus", "NaN activations", "malformed config", "unknown key"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_and_nothing_is_written(bad_inputs, tmp_path, case):
    args, message = bad_inputs[case]
    lab = tmp_path / "lab"
    proc = run_cli(*args, lab=lab)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not lab.exists(), f"{case} left files behind: {list(lab.rglob('*'))}"


def test_bad_input_leaves_an_existing_lab_untouched(finished_lab, bad_inputs):
    lab, _, _ = finished_lab
    before = hashlib.sha256(lab.db.read_bytes()).hexdigest()
    dirs = sorted(p.name for p in lab.activations.iterdir() if not p.name.startswith("."))
    for case in ("k>d_sae", "too-small corpus", "NaN activations"):
        args, _ = bad_inputs[case]
        assert run_cli(*args, lab=lab.root).returncode != 0
    assert hashlib.sha256(lab.db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in lab.activations.iterdir() if not p.name.startswith(".")) == dirs  # (.collect.lock is a mutex)


def test_run_then_sql_prints_the_transfer_matrix_and_quality(tmp_path):
    lab = Lab.at(tmp_path / "lab")
    proc = run_cli("run", *sets(small_overrides(tokens=4000, layers="2", epochs=1.0)), lab=lab.root, quiet=False)
    assert proc.returncode == 0, proc.stderr
    assert "quality" in proc.stdout
    # Progress written to a pipe (make lab | tee, a CI log): each phase once, on a line naming its run;
    # no progress bar redrawn line by line, no unlabelled per-stage timings.
    err = proc.stderr
    assert "\r" not in err and "analysis: encode" not in err and "it/s" not in err and "step/s" not in err, err
    ids = [r[0] for r in db.query_rows(lab, "SELECT run_id FROM runs ORDER BY name")]
    for rid in ids:
        for phase in ("training", "evaluating on every domain", "feature analysis done in"):
            assert sum(phase in line and rid in line for line in err.splitlines()) == 1, (rid, phase, err)
    assert err.count("collecting activations") == 1
    pivot = run_cli("sql", "PIVOT (SELECT r.train_domain, e.eval_domain, round(e.mse, 5) AS mse FROM runs r "
                    "JOIN eval_results e USING (run_id)) ON eval_domain USING first(mse) ORDER BY train_domain", lab=lab.root)
    assert pivot.returncode == 0, pivot.stderr
    lines = pivot.stdout.splitlines()
    assert lines[0].split() == ["train_domain", "code", "prose"]
    assert [line.split()[0] for line in lines[2:4]] == ["code", "prose"]
    q = run_cli("sql", "SELECT train_domain, score, rating FROM runs JOIN quality_scores USING (run_id)", lab=lab.root)
    assert "(2 rows)" in q.stdout
    statuses = db.query_rows(lab, "SELECT status, code_version FROM runs")
    assert [s for s, _ in statuses] == ["FINISHED", "FINISHED"] and all(v for _, v in statuses)
    cfg = json.loads(db.query_rows(lab, "SELECT config FROM runs LIMIT 1")[0][0])
    assert cfg["experiment"]["sae"]["k"] == 8 and cfg["training"]["total_steps"] > 0 and cfg["model"]["n_layers"] == 6


def test_pythia_architecture_end_to_end_offline(lab, tiny_neox):
    """The seeds' Pythia path, offline: a tiny GPT-NeoX from a local folder, with causal splice metrics."""
    from engine.config import build_config
    from engine.pipeline import run_experiment

    config = build_config(overrides=small_overrides(tokens=3000, layers="0,1,2",
                                                    epochs=1.0) + [f'model="{tiny_neox}"', "layer=1"])
    outcomes = run_experiment(config, lab, progress=False)
    assert len(outcomes) == 2
    sp = db.query(lab, "SELECT * FROM splice_results")
    assert set(sp["kind"]) == {"causal"} and len(sp) == 4
    assert (sp["ce_clean"] > 0).all() and (sp["kl_sae"] >= 0).all() and (sp["kl_zero"] >= 0).all()
    assert sp["ce_sae"].notna().all()


def test_a_lab_from_an_older_schema_is_upgraded_before_any_command(tmp_path):
    """A lab made before the run_metrics view existed: `sql` (a read-only command) still finds it."""
    lab = Lab.at(tmp_path / "old-lab")
    db.ensure_schema(lab)
    with db.connect(lab) as con:
        latest = con.execute("SELECT max(version) FROM schema_migrations").fetchall()[0][0]
        con.execute("DROP VIEW run_metrics")
        con.execute("DELETE FROM schema_migrations WHERE version = 6")
    db.migrations._checked.clear()
    r = run_cli("sql", "SELECT count(*) AS n FROM run_metrics", lab=lab.root)
    assert r.returncode == 0, r.stderr
    assert db.query_rows(lab, "SELECT max(version) FROM schema_migrations")[0][0] == latest >= 6
