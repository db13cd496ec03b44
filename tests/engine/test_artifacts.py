"""A run whose files are damaged, mismatched or missing: every command that loads a run says so in
one line (naming the file and the fix: retrain or delete), exits non-zero and writes nothing."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from engine.cli import main
from tests.helpers import copy_lab

# Every command that loads a trained run; RUN and OTHER are filled in per test.
COMMANDS = {
    "eval": ["eval", "RUN"],
    "analyze": ["analyze", "RUN"],
    "intervene": ["intervene", "--run", "RUN", "--feature", "1", "--zero", "--text", "a short text",
                  "--generate", "0", "--no-store"],
    "probe": ["probe", "--run", "RUN", "a short text"],
    "match": ["match", "RUN", "OTHER"],
    "ablation-specificity": ["ablation-specificity", "--run", "RUN", "--features", "5", "--contexts", "1", "--no-store"],
}


def truncate_weights(run_dir):
    p = run_dir / "sae" / "sae_weights.safetensors"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def mismatch_d_sae(run_dir):
    p = run_dir / "sae" / "cfg.json"
    cfg = json.loads(p.read_text())
    cfg["d_sae"] = cfg["d_sae"] * 2
    p.write_text(json.dumps(cfg))


def garble_config(run_dir):
    (run_dir / "config.json").write_text('{"experiment": {"sae": ')


# damage -> (how, words the one line must contain)
DAMAGE = {
    "truncated weights": (truncate_weights, ["sae_weights.safetensors", "truncated"]),
    "cfg d_sae mismatch": (mismatch_d_sae, ["cfg.json", "d_sae", "do not belong together"]),
    "weights missing": (lambda d: (d / "sae" / "sae_weights.safetensors").unlink(), ["sae_weights.safetensors", "missing"]),
    "sae folder missing": (lambda d: shutil.rmtree(d / "sae"), ["no saved SAE"]),
    "config.json missing": (lambda d: (d / "config.json").unlink(), ["config.json", "missing"]),
    "config.json garbled": (garble_config, ["config.json", "not readable JSON"]),
    "run folder missing": (lambda d: shutil.rmtree(d), ["missing"]),
}


@pytest.fixture(scope="module")
def damaged_labs(finished_lab, tmp_path_factory):
    """One private copy of the shared lab per kind of damage, its first run damaged."""
    src, _config, outcomes = finished_lab
    run_id, other = outcomes[0].run_id, outcomes[1].run_id
    labs = {}
    for name, (how, _) in DAMAGE.items():
        lab = copy_lab(src.root, tmp_path_factory.mktemp("damaged") / "lab")
        how(lab.run_dir(run_id))
        labs[name] = lab
    return labs, run_id, other


def digest(lab) -> str:
    return hashlib.sha256(lab.db.read_bytes()).hexdigest()


# `match` compares decoders only: a run without its config.json still matches (not a damage to it).
CASES = [(c, d) for c in COMMANDS for d in DAMAGE if not (c == "match" and d.startswith("config.json"))]


@pytest.mark.parametrize(("command", "damage"), CASES)
def test_a_damaged_run_is_one_line_from_every_command(damaged_labs, capsys, damage, command):
    labs, run_id, other = damaged_labs
    lab = labs[damage]
    args = [{"RUN": run_id, "OTHER": other}.get(a, a) for a in COMMANDS[command]]
    before = digest(lab)
    files = sorted(str(p) for p in lab.root.rglob("*") if ".lock" not in p.name)
    capsys.readouterr()

    code = main(["--lab", str(lab.root), "-q", *args])

    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0
    assert len(err) == 1 and err[0].startswith(f"error: run '{run_id}' cannot be loaded: "), err
    for word in DAMAGE[damage][1]:
        assert word in err[0], err[0]
    assert f"python -m engine runs delete {run_id}" in err[0]
    assert digest(lab) == before
    assert sorted(str(p) for p in lab.root.rglob("*") if ".lock" not in p.name) == files


def test_a_damaged_activation_set_is_one_line(finished_lab, tmp_path, capsys):
    src, _config, outcomes = finished_lab
    lab = copy_lab(src.root, tmp_path / "lab")
    run_id = outcomes[0].run_id
    keys = json.loads((lab.run_dir(run_id) / "config.json").read_text())["activation_sets"]
    folder = lab.activations / keys[outcomes[0].resolved["train_domain"]]
    site = next(folder.glob("mlp_out_L02.npy"))
    site.write_bytes(site.read_bytes()[:1000])
    capsys.readouterr()
    code = main(["--lab", str(lab.root), "-q", "eval", run_id])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0 and len(err) == 1, err
    assert err[0].startswith(f"error: the activation set {folder} is damaged (mlp_out_L02.npy") and "delete that folder" in err[0]


def test_an_unknown_run_is_still_named_as_unknown(finished_lab, capsys):
    lab, _config, _ = finished_lab
    capsys.readouterr()
    code = main(["--lab", str(lab.root), "-q", "probe", "--run", "no-such-run", "text"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("error: unknown run 'no-such-run'") and "\n" not in err
