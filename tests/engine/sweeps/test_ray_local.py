"""The Ray backend with a runtime its driver starts on this machine (2 CPUs, no dashboard).

A real sweep through ``python -m engine sweep --backend ray``: real Ray, real worker processes, a
real DuckDB file; then the same spec through the local worker, to compare the SAEs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import db
from core.lab import Lab
from engine.sweeps.queue import enqueue_sweep
from engine.sweeps.spec import load_spec
from engine.sweeps.worker import Worker
from findings.cli import main
from tests.helpers import REPO
from tests.ray_helpers import (
    assert_every_run_complete_once,
    engine_cmd,
    in_domain_fvu,
    jobs,
    lab_sharing_activations,
    remove_node_folders,
    spec_file,
    sweep_ids,
)

pytestmark = pytest.mark.timeout(1200)


def test_the_command_line_starts_without_ray_or_torch():
    """Ray (and torch) are imported only when a command needs them: `make lab` and every other command
    start without a cluster, and without paying for the imports."""
    code = ("import sys; from engine.cli import build_parser; from findings.cli import add_findings_commands; "
            "build_parser([add_findings_commands]).parse_args(['sweep', 'x', '--backend', 'ray']); "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_an_address_where_nothing_answers_is_refused_in_one_line_and_queues_nothing(tmp_path, capsys):
    lab = Lab.at(tmp_path / "lab")
    code = main(["--lab", str(lab.root), "-q", "sweep", str(spec_file(tmp_path)), "--backend", "ray", "--address",
                 "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: nothing answers at the Ray address 127.0.0.1:1"), err
    assert len(err.strip().splitlines()) == 1, err
    assert not lab.root.exists()  # nothing queued, nothing written


def test_a_local_ray_runtime_runs_a_sweep_once_and_trains_what_the_local_worker_trains(tmp_path, tmp_path_factory):
    lab = lab_sharing_activations(tmp_path, tmp_path_factory)
    spec = spec_file(tmp_path)
    try:
        proc = subprocess.run(engine_cmd(lab, "sweep", str(spec), "--backend", "ray", "--num-cpus", "2", "--nice", "0",
                                         "--no-analysis"),
                              cwd=REPO, capture_output=True, text=True, timeout=1100)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "running jobs on a Ray runtime on this machine" in proc.stdout
        (ray_sweep,) = sweep_ids(lab)
        # Every job ran once, on this machine's one node, and landed with all its rows and files.
        assert_every_run_complete_once(lab, ray_sweep, 4)
        j = jobs(lab, ray_sweep)
        assert (j["attempts"] == 1).all() and j["node"].notna().all() and j["node"].nunique() == 1, (
            j[["job_id", "attempts", "node"]], proc.stdout[-3000:])
        assert j["worker_id"].str.startswith("ray-").all()
        # The driver made itself the runs' owner and left the queue's worker table tidy.
        owners = db.query_rows(lab, "SELECT DISTINCT owner_pid FROM runs")
        assert owners == [(int(j["worker_id"][0].split("-")[-2]),)]
        assert db.query_rows(lab, "SELECT count(*) FROM workers WHERE stopped_at IS NULL")[0][0] == 0

        # The same spec through the local worker (1 thread, as each Ray task): the same SAEs.
        enqueue_sweep(lab, load_spec(str(spec)))
        threads = torch.get_num_threads()
        try:
            assert Worker(lab, threads=1, analysis=False, niceness=0, log=lambda _: None).run() == 4
        finally:
            torch.set_num_threads(threads)
        local_sweep = sweep_ids(lab)[1]
        on_ray, local = in_domain_fvu(lab, ray_sweep), in_domain_fvu(lab, local_sweep)
        assert on_ray.keys() == local.keys() and len(local) == 4
        for key in local:  # the same seed, data and thread count: bit-identical in practice
            assert on_ray[key] == pytest.approx(local[key], rel=1e-6, abs=0), key
    finally:
        remove_node_folders(lab)
