"""Helpers shared by test modules (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def copy_lab(src: Path, dst: Path):
    """A private copy of a lab for a test that writes to it (lock and WAL files left behind)."""
    from core.lab import Lab

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock", "*.wal"))
    return Lab.at(dst)


def small_overrides(tokens: int = 6000, epochs: float = 2.0, layers: str = "0,1,2", d_sae: int = 256, k: int = 8) -> list[str]:
    """A budget that trains in seconds but exercises every code path."""
    return [
        f"data.tokens_per_domain={tokens}",
        f"data.layers=[{layers}]",
        f"sae.d_sae={d_sae}",
        f"sae.k={k}",
        f"train.epochs={epochs}",
        "train.batch_size=256",
        "eval.splice_sequences=4",
    ]


def run_cli(*args: str, lab: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "engine"]
    if lab is not None:
        cmd += ["--lab", str(lab)]
    cmd += ["-q", *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)
