"""Activations on disk: float16 ``.npy`` files plus the token ids needed to show contexts later.

A store is one folder per (model, domain spec, token budget, sequence length, seed, python version
for stdlib corpora), named by a hash of those, so every later run that needs the same text reuses
it. Inside, token ids are shared and each (hook, layer) site has its own file, so adding a hook or
layer later reuses the same sequences. Folders are built under a temporary name and renamed into
place, so a killed collection never leaves a half-written store behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from core.errors import LabError, first_line

STORE_VERSION = 1


def site_name(hook: str, layer: int) -> str:
    return f"{hook}@{layer}"


def site_file(hook: str, layer: int) -> str:
    return f"{hook}_L{layer:02d}.npy"


def store_key(material: dict[str, Any]) -> str:
    blob = json.dumps({"v": STORE_VERSION, **material}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class ActivationStore:
    """An opened store folder. Arrays are memory-mapped: training streams from disk."""

    path: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> "ActivationStore":
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise damaged_store(path, "meta.json", e) from None
        if not isinstance(meta, dict) or not {"key", "sites", "n_rows"} <= set(meta):
            raise damaged_store(path, "meta.json", ValueError("keys missing"))
        return cls(path, meta)

    def _npy(self, name: str) -> np.ndarray:
        try:
            return np.load(self.path / name, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:  # missing, truncated (mmap larger than file), bad header
            raise damaged_store(self.path, name, e) from None

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def n_rows(self) -> int:
        return int(self.meta["n_rows"])

    @property
    def val_start(self) -> int:
        """Rows before this index are training data; from it on, held-out validation (90/10)."""
        return int(self.meta["val_start_row"])

    @property
    def d_model(self) -> int:
        return int(self.meta["d_model"])

    def has(self, hook: str, layer: int) -> bool:
        return site_name(hook, layer) in self.meta["sites"]

    def acts(self, hook: str, layer: int) -> np.ndarray:
        return self._npy(site_file(hook, layer))

    def tokens(self) -> np.ndarray:
        return self._npy("tokens.npy")

    def rows(self) -> np.ndarray:
        """(sequence, position) of each activation row."""
        return self._npy("rows.npy")

    def site_stats(self, hook: str, layer: int) -> dict[str, Any]:
        return self.meta["sites"][site_name(hook, layer)]


def damaged_store(path: Path, name: str, e: BaseException) -> LabError:
    text = first_line(e)
    return LabError(f"the activation set {path} is damaged ({name}: {text}): delete that folder and run the command "
                    "again; it is collected again from the run's settings")


class NpyStreamWriter:
    """Write an ``.npy`` array row-block by row-block without holding it (or mapping it) in memory."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype):
        self.path = path
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.f = open(path, "wb")
        np.lib.format.write_array_header_1_0(
            self.f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        )
        self.rows = 0

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        self.f.write(block.tobytes())
        self.rows += block.shape[0]

    def discard(self) -> None:
        """Close and delete the file (after a failure; closing may fail again on a full disk)."""
        try:
            self.f.close()
        except OSError:
            pass
        Path(self.path).unlink(missing_ok=True)

    def close(self) -> None:
        if self.rows != self.shape[0]:
            self.f.close()
            raise RuntimeError(f"wrote {self.rows} rows into {self.path.name}, expected {self.shape[0]}")
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


@contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """Serialize processes that add sites to the same store (workers sharing a collection)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def publish_folder(tmp: Path, final: Path) -> bool:
    """Rename a finished temp folder into place; if another process won the race, drop ours."""
    try:
        os.rename(tmp, final)
        return True
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
