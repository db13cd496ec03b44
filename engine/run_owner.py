"""Who is running a run, whether that process is still alive, and the files a failed run leaves.

A run started by ``train`` / ``run`` (or by a queue worker) records its process in the run's row
(host, pid, process start time; migration 0007). A RUNNING run whose process is gone will never
record an end by itself: the process was killed, crashed, or could not write its last status
because the disk was full. ``owner_alive`` tells the two apart on this host (the pid *and* its start
time must match, so a recycled pid does not count); runs recorded before the owner columns existed
fall back to the run folder's owner lock (``db.writer.OwnerLock``), which the OS drops when its
holder dies. On another host nobody here can know, and the answer is None.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from core.lab import Lab
from db.writer import OwnerLock


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: float

    @classmethod
    def current(cls) -> "Owner":
        p = psutil.Process()
        return cls(socket.gethostname(), p.pid, p.create_time())

    def columns(self) -> dict[str, Any]:
        return {"owner_host": self.host, "owner_pid": self.pid, "owner_started": self.started}

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


def owner_of(row: dict[str, Any]) -> Owner | None:
    """The owner recorded in a runs row (None for runs recorded before the owner columns)."""
    host, pid = row.get("owner_host"), row.get("owner_pid")
    if not isinstance(host, str) or pid is None or pid != pid:
        return None
    started = row.get("owner_started")
    return Owner(host, int(pid), float(started) if started is not None and started == started else 0.0)


def process_alive(pid: int, started: float) -> bool:
    """Whether process ``pid`` on this host is the one that started at ``started`` (epoch s)."""
    try:
        p = psutil.Process(int(pid))
        return not started or abs(p.create_time() - float(started)) < 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess, ValueError):
        return False
    except psutil.AccessDenied:
        return True  # it exists; we may not look at it


def owner_alive(lab: Lab, run_id: str, owner: Owner | None) -> bool | None:
    """True: a live process owns the run; False: none does; None: it ran on another host."""
    if owner is not None:
        if owner.host != socket.gethostname():
            return None
        return process_alive(owner.pid, owner.started)
    folder = lab.run_dir(run_id)
    if not folder.is_dir():
        return False
    lock = OwnerLock(folder)
    try:
        if lock.acquire():
            return False
        return True
    except OSError:
        return None  # cannot even open the lock file (a read-only lab): cannot tell
    finally:
        lock.release()


def remove_temporary_files(folder: Path, checkpoint: bool = False) -> list[str]:
    """Delete what a run left half-written in its folder (``*.tmp``, ``*.partial``; with
    ``checkpoint`` also ``checkpoint.pt``, which only an interrupted run resumes from). Returns the
    names removed. Spool files stay: they hold database rows still to be replayed."""
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        temporary = p.suffix == ".partial" or p.suffix.startswith(".tmp")
        if temporary or (checkpoint and p.name == "checkpoint.pt"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def remove_dead_collection_folders(lab: Lab) -> list[str]:
    """Temporary collection folders (``activations/.tmp-<key>-<pid>``) whose process is gone."""
    removed = []
    if not lab.activations.is_dir():
        return removed
    for p in lab.activations.glob(".tmp-*-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if p.is_dir() and pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed
