"""The lab folder: where the database, cached activations and run artifacts live."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DB_FILENAME = "lab.duckdb"
DEFAULT_LAB_DIR = "lab_data"


def default_lab_dir() -> Path:
    """$SAE_LAB_DIR, else ./lab_data."""
    return Path(os.environ.get("SAE_LAB_DIR", DEFAULT_LAB_DIR))


@dataclass(frozen=True)
class Lab:
    root: Path

    @classmethod
    def at(cls, path: str | Path | None = None) -> "Lab":
        return cls(Path(path) if path else default_lab_dir())

    @property
    def db(self) -> Path:
        return self.root / DB_FILENAME

    @property
    def activations(self) -> Path:
        return self.root / "activations"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def relative(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


@lru_cache(maxsize=1)
def code_version() -> str:
    """git commit of the lab's code (with -dirty when it has uncommitted changes)."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unversioned"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
                               text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unversioned"
