"""One queued job as a Ray task, on whichever node Ray picks -- never opening the lab's database.

The task runs the local worker's own job code (``execute_job``: train, evaluate, analyse) against a
*scratch lab* on its node: a DuckDB file of its own in ``$TMPDIR/sae-lab-ray/<lab>/jobs/<job>``.
It returns what the job wrote there -- the run's rows (``db.export_run_rows``: run, step metrics,
evaluations, quality, analysis) and its files (the SAE's weights and ``cfg.json``, ``config.json``)
-- and the driver lands both in the lab. While it runs, it posts live progress and checkpoints to
the driver's board (``ray_board``) and reads cancel requests from it.

Activations. A task on the lab's own machine reads and fills the lab's activation cache (one
collection serves local workers and Ray tasks alike); on any other machine it uses a node-local
cache beside the scratch labs, shared by every task of the lab on that node. Both are keyed by the
same content hash and collected under the same lock, so a set is collected once per machine and
never crosses the network.

Resuming. The scratch lab stays on the node until the task returns, so a retry on the same node
resumes from its own last checkpoint with every row it wrote. A retry on another node, or the
job re-submitted by a re-attached driver, resumes from the last checkpoint the driver received
(the board's copy, or the one kept in the lab's run folder), whose rows are in the lab already.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import ray
import torch

from core.errors import first_line
from core.lab import Lab, code_version
from db import connect, ensure_schema, export_run_rows
from db.migrations import latest_version
from engine.runs import RunSpec
from engine.sweeps.ray_runtime import node_folder
from engine.sweeps.worker import execute_job, progress_fields
from engine.training.trainer import TrainingCancelled

CHECKPOINT = "checkpoint.pt"
# What a run's folder holds that is not the run's result: the checkpoint travels on its own, the
# lock and spool files are the scratch writer's.
NOT_SHIPPED = {CHECKPOINT, ".owner.lock"}


@dataclass(frozen=True)
class TaskSettings:
    """What every task of one driver shares (sent once with each task: a few hundred bytes)."""

    lab_root: str  # the lab's folder on the driver's host
    lab_host: str  # the driver's host: the machine that holds the lab
    lab_key: str  # names the lab's folders on every node
    analysis: bool = True
    threads: int = 1
    niceness: int = 10
    ship_seconds: float | None = 60.0  # send a checkpoint to the driver at most this often (None: never)


class TaskReporter:
    """``JobReporter``'s part in a task: progress and checkpoints go to the board, cancel comes from it."""

    def __init__(self, board: Any, job_id: str, scratch: Lab, ship_seconds: float | None, every: float = 1.0):
        self.board, self.job_id, self.scratch, self.ship_seconds, self.every = board, job_id, scratch, ship_seconds, every
        self.last_report = 0.0
        self.last_cancel_check = 0.0
        self.last_ship = 0.0
        self.shipped_step: int | None = None
        self.cancelled = False
        self.t0 = time.monotonic()
        self.total_steps: int | None = None

    def phase(self, name: str) -> None:
        self.board.report.remote(self.job_id, {"phase": name})

    def on_start(self, resolved: dict) -> None:
        self.total_steps = int(resolved.get("training", {}).get("total_steps") or 0) or None
        self.t0 = time.monotonic()

    def on_log(self, step: int, tokens: int, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self.last_report < self.every and step != self.total_steps:
            return
        self.last_report = now
        self.board.report.remote(self.job_id, progress_fields(step, self.total_steps, now - self.t0, metrics))

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.last_cancel_check >= self.every:
            self.last_cancel_check = now
            try:
                self.cancelled = bool(ray.get(self.board.cancelled.remote(self.job_id), timeout=30))
            except ray.exceptions.GetTimeoutError:
                pass  # asked again at the next check
        return self.cancelled

    def on_checkpoint(self, step: int) -> None:
        """Send the checkpoint and the rows logged since the last one to the driver (throttled)."""
        now = time.monotonic()
        if self.ship_seconds is None or now - self.last_ship < self.ship_seconds:
            return
        data = (self.scratch.run_dir(self.job_id) / CHECKPOINT).read_bytes()
        rows = export_run_rows(self.scratch, self.job_id, tables=["runs", "step_metrics"], since_step=self.shipped_step)
        # Waited for: the driver must hold this checkpoint before a later one can be sent.
        ray.get(self.board.checkpoint.remote(self.job_id, step, data, rows), timeout=600)
        self.last_ship, self.shipped_step = time.monotonic(), step


_NICED = False


def _prepare_process(settings: TaskSettings) -> None:
    """Threads for every task; niceness once per worker process (``os.nice`` adds up)."""
    global _NICED
    torch.set_num_threads(max(1, settings.threads))
    if not _NICED:
        _NICED = True
        try:
            os.nice(settings.niceness)
        except OSError:
            pass


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold the job's folder alone: a task of an earlier try that Ray has not finished killing yet
    (its driver died) keeps it until it is gone."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / ".task.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the folder as it finished: take the new one
    try:
        yield
    finally:
        os.close(fd)


def scratch_lab(folder: Path, settings: TaskSettings) -> Lab:
    """The job's own lab on this node, its activations folder pointing at the machine's cache."""
    on_lab_host = socket.gethostname() == settings.lab_host and Path(settings.lab_root).is_dir()
    cache = Path(settings.lab_root) / "activations" if on_lab_host else node_folder(settings.lab_key) / "activations"
    cache.mkdir(parents=True, exist_ok=True)
    link = folder / "activations"
    if not link.is_symlink():
        link.symlink_to(cache.resolve(), target_is_directory=True)
    lab = Lab(folder)
    if not lab.db.exists():
        tmp = lab.db.with_suffix(".tmp")
        shutil.copyfile(schema_template(settings.lab_key), tmp)
        os.replace(tmp, lab.db)
    return lab


def schema_template(key: str) -> Path:
    """An empty lab database at the current schema, made once per node (creating the schema costs
    ~0.7 s; a copy, milliseconds)."""
    path = node_folder(key) / f"schema-{latest_version()}.duckdb"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.parent / "schema-template"):
        if not path.exists():
            build = path.parent / "schema-template" / "build"
            shutil.rmtree(build, ignore_errors=True)
            ensure_schema(Lab(build))
            if (build / f"{Lab(build).db.name}.wal").exists():  # not checkpointed: not a self-contained file
                with connect(Lab(build)) as con:
                    con.execute("CHECKPOINT")
            os.replace(Lab(build).db, path)
            shutil.rmtree(build, ignore_errors=True)
    return path


def checkpoint_step(data: bytes | None) -> int:
    """The training step a checkpoint holds (-1 for none or a torn one)."""
    if not data:
        return -1
    try:
        return int(torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)["step"])
    except Exception:
        return -1


def place_checkpoint(folder: Path, offers: list[bytes | None]) -> int:
    """Put the most advanced checkpoint (the node's own, or one the driver kept) where the trainer
    resumes from; returns its step (-1: none, the run starts from scratch)."""
    path = folder / CHECKPOINT
    best = checkpoint_step(path.read_bytes()) if path.exists() else -1
    for data in offers:
        step = checkpoint_step(data)
        if step > best and data is not None:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            best = step
    return best


def run_files(folder: Path) -> dict[str, bytes]:
    """The run's result files by path in its folder (the SAE, ``config.json``)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        name = p.name
        if p.is_file() and name not in NOT_SHIPPED and not name.startswith("spool") and ".tmp" not in p.suffix:
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def run_job(spec_dict: dict, settings: TaskSettings, board: Any, checkpoint: bytes | None) -> dict[str, Any]:
    """The task's body: one job in a scratch lab; returns its status, rows and files for the driver."""
    spec = RunSpec.from_dict(spec_dict, "job")
    _prepare_process(settings)
    job_id = spec.run_id
    folder = node_folder(settings.lab_key) / "jobs" / job_id
    with _exclusive(folder):
        scratch = scratch_lab(folder, settings)
        run_dir = scratch.run_dir(job_id)
        latest = ray.get(board.latest_checkpoint.remote(job_id), timeout=600)
        start_step = place_checkpoint(run_dir, [checkpoint, latest[1] if latest else None])
        node = ray.get_runtime_context().get_node_id()
        board.started.remote(job_id, {"node": node, "host": socket.gethostname(), "pid": os.getpid(),
                                      "code_version": code_version(), "checkpoint_step": start_step})
        reporter = TaskReporter(board, job_id, scratch, settings.ship_seconds)
        status, error, resumed = "FINISHED", None, None
        try:
            outcome = execute_job(scratch, spec, reporter, progress=False, analysis=settings.analysis)
            resumed = int(outcome.train.get("resumed_from_step") or 0) if outcome else None
        except TrainingCancelled:
            status, error = "KILLED", "cancelled"
        except KeyboardInterrupt:  # ray.cancel: nothing goes back, and nothing is left on the node
            shutil.rmtree(folder, ignore_errors=True)
            raise
        except Exception as e:  # the run is recorded FAILED in the scratch lab; its rows still go back
            status, error = "FAILED", f"{type(e).__name__}: {first_line(e)}"[:500]
        ckpt = run_dir / CHECKPOINT
        result = {
            "status": status, "error": error, "node": node, "host": socket.gethostname(), "pid": os.getpid(),
            "resumed_from_step": resumed,
            "rows": export_run_rows(scratch, job_id) if scratch.db.exists() else {},
            "files": run_files(run_dir) if run_dir.is_dir() else {},
            # A cancelled run keeps its checkpoint (it may be resumed), as a local worker's does.
            "checkpoint": ckpt.read_bytes() if status == "KILLED" and ckpt.exists() else None,
        }
        shutil.rmtree(folder, ignore_errors=True)
    return result


sae_lab_job = ray.remote(run_job)
