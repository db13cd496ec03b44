"""``python -m engine worker``: drain the job queue.

Each job is ``pipeline.run_locally`` (a plain function of its spec) plus the feature analysis,
wrapped with what a queue needs: a heartbeat thread, throttled progress (step, losses, dead
fraction, ETA) written to the job's row, cancel checks, and recovery of interrupted jobs, which
resume from their last checkpoint. SIGTERM / Ctrl-C flushes, marks the run and job KILLED, exits.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable

import torch

from core.errors import LabBusyError, LabError, first_line
from core.lab import Lab
from db import apply_ops, ensure_schema, query, replay_spools, spool_of, transaction, utcnow
from engine.device import cpu_threads, release_freed_memory
from engine.evaluation.codes import CODES
from engine.pipeline import RunCallbacks, run_group_locally
from engine.runs import RunOutcome, RunSpec
from engine.sweeps.queue import (
    MAX_SHARE_GROUP,
    STALE_SECONDS,
    WorkerIdentity,
    claim_group,
    jobs_awaiting_verdict,
    register_worker,
    requeue_interrupted,
)
from engine.training.trainer import TrainingCancelled


class Heartbeat(threading.Thread):
    """Beats in the worker's own row, independent of what the job is doing (collection, eval...)."""

    def __init__(self, lab: Lab, me: WorkerIdentity, every: float):
        super().__init__(daemon=True, name="heartbeat")
        self.lab, self.me, self.every = lab, me, every
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                with transaction(self.lab, wait_seconds=self.every) as con:
                    con.execute("UPDATE workers SET heartbeat_at = ? WHERE worker_id = ?", [utcnow(), self.me.worker_id])
            except (LabBusyError, LabError):
                continue  # the database is busy; liveness is also checked by pid

    def sign_off(self) -> None:
        """Stop beating and mark the worker stopped (best effort: a busy database leaves it to the
        liveness check by pid)."""
        self.stopping.set()
        self.join(timeout=5)
        try:
            with transaction(self.lab, wait_seconds=30) as con:
                con.execute("UPDATE workers SET stopped_at = ?, current_job = NULL WHERE worker_id = ?",
                            [utcnow(), self.me.worker_id])
        except LabError:
            pass


def progress_fields(step: int, total_steps: int | None, seconds: float, metrics: dict[str, float]) -> dict:
    """The live columns of a training job's row (``jobs``), as the app's live panel reads them."""
    eta = None
    if total_steps:
        rate = step / max(seconds, 1e-6)
        eta = (total_steps - step) / rate if rate > 0 else None
    return {"phase": "train", "step": step, "total_steps": total_steps, "loss": metrics.get("loss"),
            "fvu": metrics.get("fvu"), "dead_frac": metrics.get("dead_frac"), "eta_seconds": eta}


LIVE_MAX_SECONDS = 5.0  # the longest a share group goes without writing its progress and reading its cancel flags


class LiveBoard:
    """The live state of the jobs a worker trains in one pass: their progress written, and their
    cancel flags read, in one transaction per interval for all of them.

    Opening the lab's database costs tens of milliseconds, more as the lab grows. When each job of a
    share group wrote its progress and read its cancel flag on its own every second, a worker spent
    15-18 % of its training time doing that (py-spy on a worker training a group of 3). Here the
    group makes one transaction at most every ``every`` seconds, and never spends more than
    ``budget`` of its time on them: after a transaction that took t seconds the next waits at least
    t / budget (at most ``max_every``), so a slow database slows the live panel, not the training."""

    def __init__(self, lab: Lab, every: float = 1.0, budget: float = 0.05, max_every: float = LIVE_MAX_SECONDS):
        self.lab, self.every, self.budget, self.max_every = lab, every, budget, max_every
        self.jobs: list[str] = []
        self.pending: dict[str, dict] = {}
        self.cancelled: set[str] = set()
        self.next_at = 0.0

    def join(self, job_id: str) -> None:
        if job_id not in self.jobs:
            self.jobs.append(job_id)

    def drop_pending(self, job_id: str) -> None:
        """The job's phase or status is written directly: no pending progress may overwrite it."""
        self.pending.pop(job_id, None)

    def leave(self, job_id: str) -> None:
        """The job left training: nothing pending for it, and its cancel flag no longer read."""
        self.drop_pending(job_id)
        if job_id in self.jobs:
            self.jobs.remove(job_id)

    def post(self, job_id: str, fields: dict, now: bool = False) -> None:
        """Progress of one job, written with the next transaction (``now``: this one)."""
        self.pending.setdefault(job_id, {}).update(fields)
        self.sync(force=now)

    def is_cancelled(self, job_id: str) -> bool:
        self.sync()
        return job_id in self.cancelled

    def sync(self, force: bool = False) -> None:
        if not force and time.monotonic() < self.next_at:
            return
        clock = time.perf_counter()
        try:
            with transaction(self.lab, wait_seconds=0.5) as con:
                for job_id, sets in self.pending.items():
                    cols = ", ".join(f"{k} = ?" for k in sets)
                    con.execute(f"UPDATE jobs SET {cols}, progress_at = ? WHERE job_id = ?", [*sets.values(), utcnow(), job_id])
                marks = ", ".join("?" for _ in self.jobs)
                rows = con.execute(f"SELECT job_id FROM jobs WHERE cancel_requested AND job_id IN ({marks})",
                                   self.jobs).fetchall() if self.jobs else []
            self.pending.clear()
            self.cancelled.update(r[0] for r in rows)
        except LabBusyError:
            pass  # live state is ephemeral: the next transaction carries fresher values
        took = time.perf_counter() - clock
        self.next_at = time.monotonic() + min(self.max_every, max(self.every, took / self.budget))


class JobReporter:
    """A running job's live state (throttled, through its group's ``LiveBoard``), and its cancel flag."""

    def __init__(self, lab: Lab, job_id: str, every: float = 1.0, board: LiveBoard | None = None):
        self.lab, self.job_id = lab, job_id
        self.board = board or LiveBoard(lab, every)
        self.board.join(job_id)
        self.t0 = time.monotonic()
        self.total_steps: int | None = None

    def phase(self, name: str) -> None:
        if name != "train":
            self.board.drop_pending(self.job_id)  # a late progress write must not put it back in "train"
        try:
            with transaction(self.lab, wait_seconds=5.0) as con:
                con.execute("UPDATE jobs SET phase = ?, progress_at = ? WHERE job_id = ?", [name, utcnow(), self.job_id])
        except LabBusyError:
            pass

    def on_start(self, resolved: dict) -> None:
        self.total_steps = int(resolved.get("training", {}).get("total_steps") or 0) or None
        self.t0 = time.monotonic()

    def on_log(self, step: int, tokens: int, metrics: dict[str, float]) -> None:
        fields = progress_fields(step, self.total_steps, time.monotonic() - self.t0, metrics)
        self.board.post(self.job_id, fields, now=step == self.total_steps)

    def on_checkpoint(self, step: int) -> None:
        """A local job's checkpoint is already where a resumed job looks for it."""

    def should_stop(self) -> bool:
        return self.board.is_cancelled(self.job_id)


FINISH_WAIT_SECONDS = 600  # the job is over: waiting for a busy database costs nothing, losing its rows would


def finish_job(lab: Lab, job_id: str, status: str, error: str | None = None,
               wait_seconds: float = FINISH_WAIT_SECONDS, land: Callable[[Any], None] | None = None,
               phase_seconds: dict[str, float] | None = None) -> None:
    """Close the job, and land its run's spooled rows in the same transaction.

    A run's writer spools what it could not write while the database was busy (under load, even
    its first row), and the spool is otherwise replayed only by the next command. Landing it here
    means a FINISHED job always has its run's rows: before, two workers on a loaded machine could
    finish every job and leave a run missing from ``runs`` until some later command ran. ``land``
    writes more in the same transaction (the Ray driver: the rows its task sent back)."""
    with spool_of(lab.run_dir(job_id)) as ops, transaction(lab, wait_seconds=wait_seconds) as con:
        apply_ops(con, ops)
        if land is not None:
            land(con)
        con.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, error = ?, phase = ?, eta_seconds = NULL, "
            "phase_seconds = coalesce(?, phase_seconds) WHERE job_id = ?",
            [status, utcnow(), error, "done" if status == "FINISHED" else status.lower(),
             json.dumps(phase_seconds) if phase_seconds else None, job_id],
        )
        con.execute("UPDATE workers SET current_job = NULL WHERE current_job = ?", [job_id])


def run_is_finished(lab: Lab, run_id: str) -> bool:
    rows = query(lab, "SELECT status FROM runs WHERE run_id = ?", [run_id])
    return bool(len(rows)) and rows.iloc[0, 0] == "FINISHED"


def analyze(lab: Lab, run_id: str) -> dict[str, Any] | None:
    """A failed analysis warns (and can be redone with `engine analyze`); it does not fail the job."""
    # A worker started with --no-analysis (and each Ray task started so) never imports the analysis.
    # deferred: the analysis loads scipy and scikit-learn
    from engine.analysis.analyze import analyze_after_training

    return analyze_after_training(lab, run_id)


DATABASE_STAGES = ("tables", "write", "commit")  # the analysis's stages that build and write its tables


def train_jobs(lab: Lab, specs: list[RunSpec], reporters: list[Any], progress: bool = False,
               on_end: Callable[[int, RunOutcome | BaseException | None], None] | None = None
               ) -> list[RunOutcome | BaseException | None]:
    """Train and evaluate a share group's runs in one pass (resuming each from its checkpoint);
    per run its outcome, the exception it ended with, or None when it had finished before.
    ``on_end(i, result)`` is called as soon as run ``i`` has ended."""
    todo = [i for i, s in enumerate(specs) if not run_is_finished(lab, s.run_id)]
    results: list[RunOutcome | BaseException | None] = [None] * len(specs)
    for i in range(len(specs)):
        if i not in todo and on_end is not None:
            on_end(i, None)
    if todo:
        calls = [RunCallbacks(r.should_stop, r.on_log, r.on_start, r.phase, r.on_checkpoint)
                 for r in (reporters[i] for i in todo)]
        ended = None if on_end is None else (lambda j, result: on_end(todo[j], result))
        for i, result in zip(todo, run_group_locally([specs[i] for i in todo], lab, calls, progress, on_end=ended)):
            results[i] = result
    return results


def settle_job(lab: Lab, spec: RunSpec, reporter: Any, outcome: RunOutcome | None, analysis: bool = True) -> dict[str, float]:
    """After training: land the run's spooled rows, analyse it; returns seconds per phase."""
    seconds = dict(outcome.phase_seconds) if outcome is not None else {}
    clock = time.perf_counter()
    # What a busy database made the run spool lands before the analysis reads the run's rows.
    replay_spools(lab, FINISH_WAIT_SECONDS, folders=[lab.run_dir(spec.run_id)])
    seconds["database"] = seconds.get("database", 0.0) + time.perf_counter() - clock
    if analysis:
        reporter.phase("analyze")
        clock = time.perf_counter()
        summary = analyze(lab, spec.run_id)
        total = time.perf_counter() - clock
        writing = sum((summary or {}).get("timings", {}).get(k, 0.0) for k in DATABASE_STAGES)
        seconds["analyze"] = total - writing
        seconds["database"] += writing
    CODES.drop(spec.run_id)  # a worker without analysis never reads the codes evaluation kept
    release_freed_memory()  # the analysis's temporaries leave the worker's resident memory now
    return {k: round(v, 3) for k, v in seconds.items()}


def execute_job(lab: Lab, spec: RunSpec, reporter: JobReporter, progress: bool = False,
                analysis: bool = True) -> RunOutcome | None:
    """One job: train + evaluate (resuming from a checkpoint if one exists), then analyse.

    Returns the run's outcome (None when the run had finished before and only the analysis ran).
    ``reporter`` is a ``JobReporter`` or anything with its methods (the Ray task's reporter)."""
    (outcome,) = train_jobs(lab, [spec], [reporter], progress)
    if isinstance(outcome, BaseException):
        raise outcome
    settle_job(lab, spec, reporter, outcome, analysis)
    return outcome


class Worker:
    def __init__(self, lab: Lab, threads: int | None = None, stale_seconds: float = STALE_SECONDS,
                 heartbeat_seconds: float = 2.0, progress: bool = False, analysis: bool = True,
                 log: Callable[[str], None] = print, niceness: int = 10, group_size: int = MAX_SHARE_GROUP):
        self.lab, self.stale_seconds, self.group_size = lab, stale_seconds, group_size
        self.heartbeat_seconds, self.progress, self.analysis, self.log = heartbeat_seconds, progress, analysis, log
        torch.set_num_threads(threads or cpu_threads())
        try:
            os.nice(niceness)  # batch work: the app (and the researcher's terminal) keep the CPU when they need it
        except OSError:
            pass
        self.me = WorkerIdentity.current()

    def run(self, wait: bool = False, poll_seconds: float = 2.0, max_jobs: int | None = None) -> int:
        """Work until the queue is empty (or forever with ``wait``); returns the number of jobs run."""
        ensure_schema(self.lab)
        register_worker(self.lab, self.me)
        beat = Heartbeat(self.lab, self.me, self.heartbeat_seconds)
        beat.start()
        done = 0
        try:
            replay_spools(self.lab)
            while max_jobs is None or done < max_jobs:
                self.recover()  # whenever it looks for work: a crashed worker's job comes first again
                room = self.group_size if max_jobs is None else min(self.group_size, max_jobs - done)
                specs = claim_group(self.lab, self.me, room)
                if not specs:
                    if self.recover() or self.awaiting_verdict():
                        continue  # a job it could recover remains: it does not exit before that is settled
                    if not wait:
                        break
                    time.sleep(poll_seconds)
                    continue
                done += self.run_group(specs)
        finally:
            beat.sign_off()
        return done

    def run_group(self, specs: list[RunSpec]) -> int:
        """Train a claimed share group in one pass, then settle each job on its own: one job's failure
        or cancel leaves the others running to their end."""
        names = ", ".join(f"{s.run_id} ({s.name})" for s in specs)
        self.log(f"{self.me.worker_id}: running {'job' if len(specs) == 1 else f'{len(specs)} jobs in one pass:'} {names}")
        board = LiveBoard(self.lab)  # one transaction per interval for the whole group's live state
        reporters = [JobReporter(self.lab, s.run_id, board=board) for s in specs]
        open_jobs = [s.run_id for s in specs]

        def ended(i: int, result: RunOutcome | BaseException | None) -> None:
            spec = specs[i]
            board.leave(spec.run_id)
            try:
                if isinstance(result, TrainingCancelled):
                    finish_job(self.lab, spec.run_id, "KILLED", "cancelled")
                    self.log(f"job {spec.run_id}: cancelled")
                elif isinstance(result, BaseException):
                    self._failed(spec.run_id, result)
                else:
                    seconds = settle_job(self.lab, spec, reporters[i], result, self.analysis)
                    finish_job(self.lab, spec.run_id, "FINISHED", phase_seconds=seconds)
            except Exception as e:  # closing this job failed: the others of the group go on
                self._failed(spec.run_id, e)
            open_jobs.remove(spec.run_id)

        try:
            train_jobs(self.lab, specs, reporters, self.progress, on_end=ended)
        except KeyboardInterrupt:
            for job_id in list(open_jobs):
                finish_job(self.lab, job_id, "KILLED", "worker stopped (SIGTERM / Ctrl-C)")
            raise
        except Exception as e:  # one failed job does not stop the queue
            for job_id in list(open_jobs):
                self._failed(job_id, e)
        return len(specs)

    def _failed(self, job_id: str, e: BaseException) -> None:
        msg = first_line(e)
        finish_job(self.lab, job_id, "FAILED", f"{type(e).__name__}: {msg}"[:500])
        self.log(f"job {job_id}: FAILED: {msg}")

    def recover(self) -> list[str]:
        return recover_interrupted(self.lab, self.stale_seconds, self.log)

    def awaiting_verdict(self) -> bool:
        return pause_while_awaiting_verdict(self.lab, self.stale_seconds, self.heartbeat_seconds)


def recover_interrupted(lab: Lab, stale_seconds: float, log: Callable[[str], None]) -> list[str]:
    """Requeue the jobs of workers (or Ray drivers) that are gone; they resume from their last checkpoint."""
    ids = requeue_interrupted(lab, stale_seconds)
    for jid in ids:
        log(f"job {jid} was interrupted: requeued, it resumes from its last checkpoint")
    return ids


def pause_while_awaiting_verdict(lab: Lab, stale_seconds: float, heartbeat_seconds: float) -> bool:
    """True (after a pause) while a job on another host has an owner that missed its heartbeats."""
    if not jobs_awaiting_verdict(lab, stale_seconds, heartbeat_seconds):
        return False
    time.sleep(heartbeat_seconds)
    return True
