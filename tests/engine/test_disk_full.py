"""A disk that fills up during a run, for real: the lab lives on a small tmpfs.

The run must end FAILED (at once, or, when even that last write finds no room, at the next command
that can write), its half-written files must be gone, the CLI must print one line naming the file
and the fix, and the lab must still open and answer queries.
"""

from __future__ import annotations

import pytest

import db
from core.lab import Lab
from tests.helpers import Tmpfs, error_lines, run_cli

SMALL = ["--set", "data.tokens_per_domain=3000", "--set", "data.layers=[2]", "--set", "sae.d_sae=512", "--set", "sae.k=8",
         "--set", "train.epochs=2.0", "--set", "train.batch_size=128", "--set", "eval.splice_sequences=4"]


def leftovers(lab: Lab) -> list[str]:
    """Temporary files anywhere in the lab (a run's *.tmp / *.partial, a collection's .tmp-* folder)."""
    out = [str(p) for p in lab.root.rglob("*")
           if p.suffix == ".partial" or p.suffix.startswith(".tmp") or p.name.startswith(".tmp-")]
    return out + [str(p) for p in lab.runs.glob("*/checkpoint.pt")]


def test_disk_fills_during_training(tmp_path):
    with Tmpfs(tmp_path / "disk", "64m") as disk:
        lab = Lab.at(disk.where / "lab")
        r = run_cli("collect", *SMALL, lab=lab.root)
        assert r.returncode == 0, r.stderr
        # Room for the run's folder and a few database writes, not for its checkpoint (3x the SAE).
        disk.resize(disk.used_kib() + 1500)
        before = db.query_rows(lab, "SELECT count(*) FROM activation_sets")[0][0]

        r = run_cli("train", *SMALL, lab=lab.root)
        assert r.returncode != 0
        lines = error_lines(r)
        assert len(lines) == 1 and lines[0].startswith("error: run "), r.stderr
        assert " is full " in lines[0] and "FAILED" in lines[0] and "free some space" in lines[0]
        assert leftovers(lab) == []

        # Still readable on the full disk: the collected activations and the run's row are there.
        q = run_cli("sql", "SELECT status FROM runs", lab=lab.root)
        assert q.returncode == 0, q.stderr
        assert db.query_rows(lab, "SELECT count(*) FROM activation_sets")[0][0] == before
        (run_id, status), = db.query_rows(lab, "SELECT run_id, status FROM runs")
        assert status in ("FAILED", "RUNNING")  # RUNNING: not even the status write found room

        disk.resize(64 * 1024)  # space freed: the next command that writes ends the run for good
        r = run_cli("analyze", "--all", lab=lab.root)
        assert r.returncode == 0, r.stderr
        status, error = db.query_rows(lab, "SELECT status, error FROM runs WHERE run_id = ?", [run_id])[0]
        assert status == "FAILED" and error
        assert leftovers(lab) == []
        assert run_cli("sql", "SELECT count(*) FROM step_metrics", lab=lab.root).returncode == 0


def test_disk_fills_during_collection(tmp_path):
    with Tmpfs(tmp_path / "disk", "3m") as disk:
        lab = Lab.at(disk.where / "lab")
        db.ensure_schema(lab)  # an existing lab: it must stay usable
        r = run_cli("run", *SMALL, lab=lab.root)
        assert r.returncode != 0
        lines = error_lines(r)
        assert len(lines) == 1 and lines[0].startswith("error: the disk holding ") and " is full " in lines[0], r.stderr
        assert str(lab.activations) in lines[0]
        assert leftovers(lab) == []
        assert not lab.runs.exists() or list(lab.runs.iterdir()) == []  # no run started, no folder left
        assert db.query_rows(lab, "SELECT count(*) FROM runs")[0][0] == 0
        q = run_cli("sql", "SELECT count(*) AS n FROM activation_sets", lab=lab.root)
        assert q.returncode == 0 and "(1 row)" in q.stdout, q.stderr


def test_a_full_disk_while_saving_an_sae_leaves_no_partial_folder(tmp_path):
    import torch

    from core.errors import DiskFullError
    from engine.training.sae import SparseAutoencoder

    with Tmpfs(tmp_path / "disk", "1m") as disk:
        sae = SparseAutoencoder(384, 2048, "topk", k=8)  # ~6 MB of weights: cannot fit
        with torch.no_grad():
            sae.W_dec.normal_()
        with pytest.raises(DiskFullError, match="is full"):
            sae.save(disk.where / "sae", {"model_name": "m"})
        assert list(disk.where.iterdir()) == []
