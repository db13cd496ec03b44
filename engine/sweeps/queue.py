"""The job queue in DuckDB: enqueue a sweep, claim jobs, report progress, cancel, recover.

Exactly-once claiming needs no extra machinery: a claim is one write transaction, and DuckDB lets
one process write at a time. A RUNNING job is "interrupted" when its worker is gone:
- on this host, the OS answers at once (pid + process start time, so a reused pid is not mistaken
  for the worker): no staleness wait, so a worker started a second after a crash recovers the job;
- on another host we cannot ask the OS, so the worker's heartbeat decides (stale after
  ``stale_seconds``); a live worker that merely waits on a busy database keeps beating.
A requeue is conditioned on the job still belonging to the worker found gone, so two workers that
both saw the same dead owner cannot requeue a job that one of them has already claimed again.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any

import psutil
import pyarrow as pa

from core.errors import LabError
from core.lab import Lab
from db import Op, query, query_rows, transaction, utcnow, write_now
from engine.artifacts import check_against_model
from engine.collection.models import resolve_model
from engine.runs import RunSpec, plan_runs, share_key
from engine.sweeps.spec import PARAMETERS, SweepSpec, expand

STALE_SECONDS = 30.0


def new_sweep_id() -> str:
    return f"s-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def plan_sweep(spec: SweepSpec) -> tuple[str, list[RunSpec]]:
    """Validate the whole sweep and return its run specs; nothing is written."""
    configs = expand(spec)
    infos = {}
    for c in configs:
        if c.model not in infos:
            infos[c.model] = resolve_model(c.model)
        try:
            check_against_model(c, infos[c.model])
        except LabError as e:
            raise LabError(f"sweep job '{c.name}' is invalid: {e}") from None
    sweep_id = new_sweep_id()
    hooks = sorted({c.hook for c in configs})
    runs: list[RunSpec] = []
    for c in configs:
        if len(hooks) > 1:  # every job asks for every hook: the first collection pass records them all
            c = c.replace(data=c.data.replace(hooks=hooks))
        runs.extend(plan_runs(c, sweep_id=sweep_id, tags=[spec.name]))
    if spec.run_cap is not None:
        runs = runs[: spec.run_cap]
    return sweep_id, runs


def enqueue_sweep(lab: Lab, spec: SweepSpec) -> tuple[str, list[RunSpec]]:
    """Validate, then write the sweep and all its jobs in one transaction."""
    sweep_id, runs = plan_sweep(spec)
    now = utcnow()
    with transaction(lab) as con:
        seq0 = con.execute("SELECT coalesce(max(seq), 0) FROM jobs").fetchall()[0][0]
        con.execute(
            "INSERT INTO sweeps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [sweep_id, spec.name, spec.method, spec.metric_name(), spec.goal(), spec.run_cap, spec.to_json(), len(runs), now],
        )
        rows = [[r.run_id, sweep_id, seq0 + i + 1, "QUEUED", json.dumps(r.to_dict()), job_label(r, spec), now]
                for i, r in enumerate(runs)]

        table = pa.table({k: [row[i] for row in rows] for i, k in enumerate(["job_id", "sweep_id", "seq", "status", "spec",
                                                                             "label", "enqueued_at"])})
        con.register("new_jobs", table)
        con.execute("INSERT INTO jobs (job_id, sweep_id, seq, status, spec, label, enqueued_at) SELECT * FROM new_jobs")
        con.unregister("new_jobs")
    return sweep_id, runs


def job_label(run: RunSpec, spec: SweepSpec | None = None) -> str:
    c = run.config
    parts = [f"L{c.layer} {c.hook}", f"k={c.sae.k}", f"d_sae={c.sae.d_sae}", c.sae.architecture, f"train={run.train_domain}"]
    return " ".join(parts)


def enqueue_runs(lab: Lab, runs: list[RunSpec]) -> None:
    """Queue single runs (e.g. the app's 'run this config') without a sweep."""
    now = utcnow()
    with transaction(lab) as con:
        seq0 = con.execute("SELECT coalesce(max(seq), 0) FROM jobs").fetchall()[0][0]
        for i, r in enumerate(runs):
            con.execute(
                "INSERT INTO jobs (job_id, sweep_id, seq, status, spec, label, enqueued_at) VALUES (?, ?, ?, 'QUEUED', ?, ?, ?)",
                [r.run_id, r.sweep_id, seq0 + i + 1, json.dumps(r.to_dict()), job_label(r), now],
            )


# -- workers ----------------------------------------------------------------------------------------
@dataclass
class WorkerIdentity:
    worker_id: str
    host: str
    pid: int
    proc_started: float

    @classmethod
    def current(cls) -> "WorkerIdentity":
        pid = os.getpid()
        return cls(f"w-{socket.gethostname()}-{pid}-{secrets.token_hex(2)}", socket.gethostname(), pid,
                   psutil.Process(pid).create_time())


def register_worker(lab: Lab, me: WorkerIdentity) -> None:
    now = utcnow()
    write_now(lab, [Op("insert", "workers", ["worker_id", "host", "pid", "proc_started", "started_at", "heartbeat_at"],
                            [[me.worker_id, me.host, me.pid, me.proc_started, now, now]], on_conflict="replace")])


def worker_alive(host: str, pid: int, proc_started: float | None) -> bool:
    """On this host, ask the OS; elsewhere we cannot know (the heartbeat decides)."""
    if host != socket.gethostname():
        return True
    try:
        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent (e.g. the app)
            return False
        return proc_started is None or abs(p.create_time() - float(proc_started)) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, TypeError):
        return False


@dataclass(frozen=True)
class OwnedJob:
    """A RUNNING job and the worker that claimed it (None when the worker row is missing)."""

    job_id: str
    worker_id: str | None
    host: str | None
    heartbeat_age: float | None  # seconds since the owner's last heartbeat


def _running_jobs(lab: Lab) -> tuple[list[OwnedJob], set[str]]:
    """RUNNING jobs with their owners, and the ids of those whose owner is gone."""
    rows = query_rows(
        lab,
        """SELECT j.job_id, j.worker_id, w.host, w.pid, w.proc_started, w.heartbeat_at, w.stopped_at IS NOT NULL
           FROM jobs j LEFT JOIN workers w ON j.worker_id = w.worker_id WHERE j.status = 'RUNNING'""",
    )
    now = utcnow()
    jobs, gone = [], set()
    for job_id, worker_id, host, pid, proc_started, heartbeat_at, stopped in rows:
        age = None if heartbeat_at is None else (now - heartbeat_at).total_seconds()
        jobs.append(OwnedJob(job_id, worker_id, host, age))
        if host is None or stopped or (host == socket.gethostname() and not worker_alive(host, pid, proc_started)):
            gone.add(job_id)
    return jobs, gone


def interrupted_jobs(lab: Lab, stale_seconds: float = STALE_SECONDS) -> list[OwnedJob]:
    """RUNNING jobs whose worker is gone: at once on this host, after ``stale_seconds`` elsewhere."""
    jobs, gone = _running_jobs(lab)
    return [j for j in jobs if j.job_id in gone or (j.host != socket.gethostname()
                                                     and (j.heartbeat_age is None or j.heartbeat_age > stale_seconds))]


def jobs_awaiting_verdict(lab: Lab, stale_seconds: float = STALE_SECONDS, beat_seconds: float = 2.0) -> list[OwnedJob]:
    """RUNNING jobs on other hosts whose owner has missed heartbeats but is not yet stale.

    Such an owner may have died; a worker about to exit waits for the verdict (a fresh beat, or
    staleness and a requeue) instead of leaving a job that nobody will recover."""
    jobs, gone = _running_jobs(lab)
    return [j for j in jobs if j.job_id not in gone and j.host != socket.gethostname()
            and j.heartbeat_age is not None and 3 * beat_seconds < j.heartbeat_age <= stale_seconds]


def requeue_interrupted(lab: Lab, stale_seconds: float = STALE_SECONDS, found: list[OwnedJob] | None = None) -> list[str]:
    """Put interrupted jobs back at the head of the queue; their runs resume from the last checkpoint.

    ``found`` is what a look at the queue saw (by default, a look now); it may be out of date by the
    time the write runs, which the write allows for."""
    found = interrupted_jobs(lab, stale_seconds) if found is None else found
    requeued: list[str] = []
    if found:
        with transaction(lab) as con:
            for job in found:
                # Only if it still belongs to the owner found gone: another worker may have requeued and
                # claimed it since we looked.
                hit = con.execute(
                    "UPDATE jobs SET status = 'QUEUED', worker_id = NULL, phase = 'interrupted' "
                    "WHERE job_id = ? AND status = 'RUNNING' AND worker_id IS NOT DISTINCT FROM ? RETURNING job_id",
                    [job.job_id, job.worker_id],
                ).fetchall()
                requeued.extend(r[0] for r in hit)
    return requeued


MAX_SHARE_GROUP = 8  # most jobs one worker trains in one pass (memory, and work left for other workers)


def claim_next(lab: Lab, me: WorkerIdentity) -> RunSpec | None:
    """The next queued job, alone."""
    group = claim_group(lab, me, max_jobs=1)
    return group[0] if group else None


def claim_group(lab: Lab, me: WorkerIdentity, max_jobs: int = MAX_SHARE_GROUP) -> list[RunSpec]:
    """The next queued job and up to ``max_jobs - 1`` more that train on the same batches
    (``engine.runs.share_key``), claimed in one transaction: they train together in one pass.

    The group is claimed as a unit but ends job by job: each job keeps its own status, progress,
    cancel flag and checkpoint, and an interrupted group's jobs are requeued one by one (and, being
    next in the queue and still sharing their batches, claimed together again).

    A group leaves work for the lab's other live workers: of n queued jobs (any batches), with w
    workers beating, it takes at most ceil(n / w) (a worker on this host counts
    while its process lives). Grouping saves a batch gather per step; a core
    left idle while one worker trains the whole queue would cost far more."""
    with transaction(lab) as con:
        rows = con.execute(
            "SELECT job_id, spec FROM jobs WHERE status = 'QUEUED' AND NOT cancel_requested ORDER BY seq LIMIT ?",
            [1 if max_jobs <= 1 else 256],  # a group is looked for among the next 256 queued jobs
        ).fetchall()
        if not rows:
            return []
        specs = [(job_id, RunSpec.from_dict(json.loads(text), "job")) for job_id, text in rows[:1]]
        now = utcnow()
        if max_jobs > 1:
            key = share_key(specs[0][1])
            sharing = [(job_id, spec) for job_id, spec in ((j, RunSpec.from_dict(json.loads(t), "job")) for j, t in rows[1:])
                       if share_key(spec) == key]
            others = con.execute(
                "SELECT host, pid, proc_started FROM workers WHERE stopped_at IS NULL AND heartbeat_at >= ? "
                "AND worker_id != ?", [now - dt.timedelta(seconds=STALE_SECONDS), me.worker_id],
            ).fetchall()
            alive = sum(worker_alive(host, pid, started) for host, pid, started in others)  # a killed one beats no more
            fair = math.ceil(len(rows) / (1 + alive))
            specs.extend(sharing[: min(max_jobs, fair) - 1])
        ids = [job_id for job_id, _ in specs]
        con.execute(
            "UPDATE jobs SET status = 'RUNNING', worker_id = ?, claimed_at = ?, attempts = attempts + 1, phase = 'collect', "
            "progress_at = ?, share_group = ? WHERE job_id IN (SELECT unnest(?))",
            [me.worker_id, now, now, ids[0] if len(ids) > 1 else None, ids],
        )
        con.execute("UPDATE workers SET current_job = ?, heartbeat_at = ? WHERE worker_id = ?", [ids[0], now, me.worker_id])
    return [spec for _, spec in specs]


def cancel_queued_and_flag_running(lab: Lab, job_ids: list[str] | None = None, sweep_id: str | None = None) -> int:
    """Queued jobs are marked KILLED at once; running ones get a cancel request (stopped at the next step)."""
    cond, params = ("job_id IN (SELECT unnest(?))", [job_ids]) if job_ids else ("sweep_id = ?", [sweep_id])
    now = utcnow()
    with transaction(lab) as con:
        n = con.execute(f"SELECT count(*) FROM jobs WHERE {cond} AND status IN ('QUEUED', 'RUNNING')", params).fetchall()[0][0]
        con.execute("UPDATE jobs SET status = 'KILLED', cancel_requested = true, finished_at = ?, error = 'cancelled before "
                    f"start' WHERE {cond} AND status = 'QUEUED'", [now, *params])
        con.execute(f"UPDATE jobs SET cancel_requested = true WHERE {cond} AND status = 'RUNNING'", params)
    return int(n)


def queue_counts(lab: Lab) -> dict[str, int]:
    df = query(lab, "SELECT status, count(*) AS n FROM jobs GROUP BY status")
    return {r.status: int(r.n) for r in df.itertuples()}


def job_statuses(lab: Lab, sweep_id: str | None = None, stale_seconds: float = STALE_SECONDS) -> Any:
    """Jobs with INTERRUPTED shown for RUNNING jobs whose worker is gone."""
    df = query(
        lab,
        "SELECT * FROM jobs" + (" WHERE sweep_id = ?" if sweep_id else "") + " ORDER BY seq",
        [sweep_id] if sweep_id else None,
    )
    gone = {j.job_id for j in interrupted_jobs(lab, stale_seconds)} if (df["status"] == "RUNNING").any() else set()
    df["shown_status"] = [("INTERRUPTED" if j in gone else s) for j, s in zip(df["job_id"], df["status"])]
    return df


def sweep_parameter_names() -> list[str]:
    return list(PARAMETERS)
