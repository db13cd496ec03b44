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


def test_release_freed_memory_hands_a_jobs_freed_heap_back():
    """Many mid-sized arrays (a job's analysis temporaries) freed but one: glibc keeps their pages
    resident until ``malloc_trim``. Measured in a fresh process, so the suite's own heap does not count."""
    script = """
import numpy as np, psutil
from engine.device import release_freed_memory
p = psutil.Process()
kept = []
for i in range(400):
    a = np.ones(250_000)  # 2 MB: from the heap once glibc's mmap threshold has grown
    if i % 100 == 99:
        kept.append(a)
    del a
big = [np.ones(250_000) for _ in range(300)]
kept.append(big[-1])
del big
before = p.memory_info().rss
trimmed = release_freed_memory()
print(before, p.memory_info().rss, trimmed)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    before, after, trimmed = int(out[0]), int(out[1]), out[2] == "True"
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert trimmed
    assert after < before - 300 * 2**20, (before, after)
