"""Helpers shared by test modules (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


def run_cli(*args: str, lab: Path | None = None, timeout: float = 600, env: dict | None = None,
            quiet: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "engine"]
    if lab is not None:
        cmd += ["--lab", str(lab)]
    cmd += ["-q", *args] if quiet else list(args)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The non-empty lines a command printed on stderr."""
    return [line for line in proc.stderr.strip().splitlines() if line.strip()]


def _drop_write_override() -> None:
    """In the child, before exec: give up root's power to ignore file permissions (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH leave the bounding set), so a 0o555 folder or 0o444 file is read-only to it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_cli_read_only_user(*args: str, lab: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``run_cli`` as a user who may not write what the permissions forbid (root loses its override)."""
    cmd = [sys.executable, "-m", "engine", "--lab", str(lab), "-q", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    pre = _drop_write_override if os.geteuid() == 0 else None
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=pre)


def read_only_user_or_skip() -> None:
    """Skip (with the reason printed) where a child cannot be made to respect file permissions."""
    import pytest

    if os.geteuid() != 0:
        return
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_drop_write_override, capture_output=True, text=True)
    if probe.returncode != 0:
        reason = f"cannot drop CAP_DAC_OVERRIDE for a child process here: {probe.stderr.strip()[-200:]}"
        print(reason)
        pytest.skip(reason)


def make_read_only(path: Path) -> None:
    """Folders 0o555, files 0o444 (undo with ``make_writable``)."""
    for p in [path, *path.rglob("*")]:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)


def make_writable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


class Tmpfs:
    """A real small file system (tmpfs) mounted at a folder, to fill a disk for real. Root only."""

    def __init__(self, where: Path, size: str):
        self.where, self.size = Path(where), size

    def __enter__(self) -> "Tmpfs":
        import pytest

        self.where.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            reason = "mounting a tmpfs needs root: the disk-full test cannot fill a real disk here"
            print(reason)
            pytest.skip(reason)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.where)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            reason = f"mounting a tmpfs is not allowed here ({r.stderr.strip() or r.returncode}): skipping the disk-full test"
            print(reason)
            pytest.skip(reason)
        return self

    def resize(self, kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(self.where)], check=True, capture_output=True)

    def used_kib(self) -> int:
        st = os.statvfs(self.where)
        return (st.f_blocks - st.f_bfree) * st.f_frsize // 1024

    def __exit__(self, *exc) -> None:
        r = subprocess.run(["umount", str(self.where)], capture_output=True, text=True)
        if r.returncode != 0:  # a process still holds a file there: lazy unmount, gone when it lets go
            subprocess.run(["umount", "-l", str(self.where)], capture_output=True)


def dead_process() -> tuple[int, float]:
    """(pid, start time) of a real process that has exited."""
    import psutil

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    started = psutil.Process(p.pid).create_time()
    p.wait()
    return p.pid, started


def add_running_run(lab, run_id: str, pid: int, started: float, host: str | None = None, with_job: str | None = None) -> None:
    """A RUNNING copy of the lab's first run (as a process that started training it would leave),
    owned by process ``pid``; its folder holds a checkpoint and a half-written checkpoint.tmp."""
    import socket

    import db

    with db.transaction(lab) as con:
        con.execute("INSERT INTO runs SELECT * REPLACE (? AS run_id, 'RUNNING' AS status, NULL::TIMESTAMP AS ended_at, "
                    "? AS owner_host, ? AS owner_pid, ? AS owner_started) FROM runs ORDER BY created_at LIMIT 1",
                    [run_id, host or socket.gethostname(), pid, started])
        if with_job:
            con.execute("INSERT INTO jobs (job_id, seq, status, spec, enqueued_at) VALUES (?, 1, ?, '{}', now()::TIMESTAMP)",
                        [run_id, with_job])
    folder = lab.run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint.pt").write_bytes(b"c" * 100)
    (folder / "checkpoint.tmp").write_bytes(b"t" * 10)


def wait_for(predicate, timeout: float = 420, every: float = 0.2):
    """The predicate's first truthy value, polled every ``every`` s; fails after ``timeout`` s.
    Generous by default: on a loaded 2-core machine, importing torch and collecting take minutes in
    a worker at nice 10, and a Ray worker's imports alone half a minute. Tests check what happens,
    never how fast."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")
