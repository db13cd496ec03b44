"""The Ray driver's board: where running tasks post progress and checkpoints and read cancel requests.

One actor per driver (no CPU reserved). Tasks never touch the lab: they report here, fire and
forget, and the driver takes what arrived about once a second and writes it into the lab -- live
progress into the ``jobs`` columns the app's live panel reads, checkpoints into the run's folder.
The board also keeps each running job's latest checkpoint, so a task that Ray retries on another
node resumes from it. It lives and dies with its driver (a re-attached driver makes a new one).

Only the modules of the ray backend import this one (it imports ``ray``).
"""

from __future__ import annotations

from typing import Any

import ray


@ray.remote(num_cpus=0)
class Board:
    def __init__(self) -> None:
        self.progress: dict[str, dict[str, Any]] = {}
        self.events: list[tuple] = []
        self.checkpoints: dict[str, tuple[int, bytes]] = {}
        self.cancels: set[str] = set()

    # -- from tasks ---------------------------------------------------------------------------------
    def report(self, job_id: str, fields: dict[str, Any]) -> None:
        """Live state; only the latest value of each field matters."""
        self.progress.setdefault(job_id, {}).update(fields)

    def started(self, job_id: str, info: dict[str, Any]) -> None:
        """A task (first try or a retry) began the job: which node, which process."""
        self.events.append(("started", job_id, info))

    def checkpoint(self, job_id: str, step: int, data: bytes, rows: dict) -> None:
        """A checkpoint and the rows logged since the previous one, for the driver to keep in the lab."""
        self.checkpoints[job_id] = (step, data)
        self.events.append(("checkpoint", job_id, step, data, rows))

    def latest_checkpoint(self, job_id: str) -> tuple[int, bytes] | None:
        return self.checkpoints.get(job_id)

    def cancelled(self, job_id: str) -> bool:
        return job_id in self.cancels

    # -- from the driver ----------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        self.cancels.add(job_id)

    def forget(self, job_id: str) -> None:
        """The job is over: drop its checkpoint (memory) and state."""
        self.checkpoints.pop(job_id, None)
        self.progress.pop(job_id, None)
        self.cancels.discard(job_id)

    def take(self) -> tuple[dict[str, dict[str, Any]], list[tuple]]:
        """Everything posted since the last take, oldest event first."""
        progress, events = self.progress, self.events
        self.progress, self.events = {}, []
        return progress, events
