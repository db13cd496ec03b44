"""Thread budget: SAE_LAB_THREADS caps every lab process it reaches, and a bad value is one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.errors import LabError
from engine.device import THREADS_ENV, cpu_threads
from tests.helpers import REPO


def test_unset_means_every_core_and_set_means_that_many(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert cpu_threads() == (os.cpu_count() or 1)
    monkeypatch.setenv(THREADS_ENV, "3")
    assert cpu_threads() == 3


@pytest.mark.parametrize("raw, message", [("two", "is not a whole number"), ("0", "must be at least 1")])
def test_a_bad_value_is_one_line_that_names_the_fix(monkeypatch, raw, message):
    monkeypatch.setenv(THREADS_ENV, raw)
    with pytest.raises(LabError, match=message) as e:
        cpu_threads()
    assert "\n" not in str(e.value) and "unset it" in str(e.value)


def test_a_worker_process_runs_with_the_capped_thread_count(tmp_path):
    """The worker takes its default from the variable, before any job (an empty queue: it exits at once)."""
    code = ("import torch, sys; from engine.cli import main; main(sys.argv[1:]); print('threads', torch.get_num_threads())")
    env = {**os.environ, THREADS_ENV: "1", "OMP_NUM_THREADS": ""}
    env.pop("OMP_NUM_THREADS")
    out = subprocess.run([sys.executable, "-c", code, "--lab", str(tmp_path / "lab"), "-q", "worker", "--no-analysis"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "threads 1" in out.stdout
