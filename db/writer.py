"""Buffered, spooling writes: a training loop never waits on (or loses rows to) a busy database.

Operations are queued in memory and flushed in one transaction per batch. If the file stays
locked past a short wait, the batch is appended to a JSON-lines *spool* in the run's folder and the
loop carries on; the next flush replays the spool first, in order, then the new rows. Every
operation is idempotent (inserts ignore or replace by primary key, updates set fixed values), so a
spool replayed twice after a crash writes nothing twice.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import pyarrow as pa

from core.errors import LabBusyError, LabError
from core.lab import Lab
from db.transactions import transaction

SPOOL_NAME = "spool.jsonl"
Conflict = Literal["ignore", "replace", "error"]

# Crash tests only: called with a flush's operations inside its open transaction, after they are
# applied and before COMMIT (tests/fault_worker.py installs one that pauses there, so a test can
# SIGKILL a worker in the middle of a real database write). Nothing in the lab sets it.
in_transaction_hook: Callable[[list["Op"]], None] | None = None


def utcnow() -> dt.datetime:
    """Naive UTC timestamp: every time stored in the lab is UTC."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass
class Op:
    """One idempotent write: an insert of rows or an update of one keyed row."""

    kind: Literal["insert", "update", "delete"]
    table: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    on_conflict: Conflict = "ignore"
    where: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "table": self.table,
                "columns": self.columns,
                "rows": self.rows,
                "on_conflict": self.on_conflict,
                "where": self.where,
                "values": self.values,
            },
            default=_json_default,
        )

    @classmethod
    def from_json(cls, text: str) -> "Op":
        d = json.loads(text)
        return cls(**d)


def _json_default(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return {"__ts__": v.isoformat()}
    if hasattr(v, "item"):
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"cannot store {type(v).__name__} in the spool")


def _revive(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"__ts__"}:
        return dt.datetime.fromisoformat(v["__ts__"])
    if isinstance(v, list):
        return [_revive(x) for x in v]
    return v


def apply_ops(con, ops: Iterable[Op]) -> None:
    """Apply operations inside an open transaction."""
    for n, op in enumerate(ops):
        if op.kind == "insert":
            if not op.rows:
                continue
            cols = list(zip(*[[_revive(v) for v in row] for row in op.rows]))
            table = pa.table({c: pa.array(list(vals)) if not _all_none(vals) else pa.nulls(len(vals))
                              for c, vals in zip(op.columns, cols)})
            view = f"_buf_{n}"
            con.register(view, table)
            verb = {"ignore": "INSERT OR IGNORE", "replace": "INSERT OR REPLACE", "error": "INSERT"}[op.on_conflict]
            col_list = ", ".join(f'"{c}"' for c in op.columns)
            con.execute(f'{verb} INTO "{op.table}" ({col_list}) SELECT {col_list} FROM {view}')
            con.unregister(view)
        elif op.kind == "update":
            sets = ", ".join(f'"{c}" = ?' for c in op.values)
            conds = " AND ".join(f'"{c}" = ?' for c in op.where)
            con.execute(
                f'UPDATE "{op.table}" SET {sets} WHERE {conds}',
                [_revive(v) for v in op.values.values()] + [_revive(v) for v in op.where.values()],
            )
        elif op.kind == "delete":
            conds = " AND ".join(f'"{c}" = ?' for c in op.where)
            con.execute(f'DELETE FROM "{op.table}" WHERE {conds}', [_revive(v) for v in op.where.values()])


def _all_none(vals: Iterable[Any]) -> bool:
    return all(v is None for v in vals)


def read_spool(path: Path) -> list[Op]:
    """Ops in a spool file; a torn last line (killed mid-append) is skipped."""
    if not path.exists():
        return []
    ops = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            ops.append(Op.from_json(line))
        except (json.JSONDecodeError, TypeError):
            continue
    return ops


def append_spool(path: Path, ops: list[Op]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        # Start on a fresh line in case a previous append was torn by a kill.
        if f.tell() > 0:
            f.write("\n")
        for op in ops:
            f.write(op.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def claim_spool(spool_dir: Path) -> list[Path]:
    """Move the active spool aside (atomic rename) and return every claimed file, oldest first.

    Appends after the rename go to a fresh active file, so no op is lost between read and delete."""
    active = spool_dir / SPOOL_NAME
    if active.exists():
        os.replace(active, spool_dir / f"spool-{time.time_ns():020d}.claimed")
    return sorted(spool_dir.glob("spool-*.claimed"))


class OwnerLock:
    """An advisory lock on a run folder held by the process writing that run.

    The OS drops it when the process dies, so "locked" means "alive": replaying a spool whose
    owner is alive could reorder its writes, so replayers skip locked folders."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / ".owner.lock"
        self.fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            return False
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class BufferedWriter:
    """Queue writes for one run; flush in batches; spool when the database is held elsewhere."""

    def __init__(
        self,
        lab: Lab,
        spool_dir: str | Path,
        *,
        flush_every_seconds: float = 5.0,
        flush_every_ops: int = 200,
        wait_seconds: float = 2.0,
    ):
        self.lab = lab
        self.spool_dir = Path(spool_dir)
        self.spool_path = self.spool_dir / SPOOL_NAME
        self.flush_every_seconds = flush_every_seconds
        self.flush_every_ops = flush_every_ops
        self.wait_seconds = wait_seconds
        self.pending: list[Op] = []
        self.pending_rows = 0
        self.last_flush = time.monotonic()
        self.spooled_batches = 0
        self.owner = OwnerLock(self.spool_dir)
        self.owner.acquire(blocking=True)

    # -- queueing -------------------------------------------------------------------------------
    def insert(self, table: str, row: dict[str, Any], on_conflict: Conflict = "ignore") -> None:
        last = self.pending[-1] if self.pending else None
        cols = list(row)
        if last and last.kind == "insert" and last.table == table and last.columns == cols and last.on_conflict == on_conflict:
            last.rows.append(list(row.values()))
        else:
            self.pending.append(Op("insert", table, cols, [list(row.values())], on_conflict))
        self.pending_rows += 1

    def insert_many(self, table: str, columns: list[str], rows: list[list[Any]], on_conflict: Conflict = "ignore") -> None:
        self.pending.append(Op("insert", table, list(columns), [list(r) for r in rows], on_conflict))
        self.pending_rows += len(rows)

    def update(self, table: str, where: dict[str, Any], values: dict[str, Any]) -> None:
        self.pending.append(Op("update", table, where=dict(where), values=dict(values)))
        self.pending_rows += 1

    def delete(self, table: str, where: dict[str, Any]) -> None:
        self.pending.append(Op("delete", table, where=dict(where)))
        self.pending_rows += 1

    # -- flushing -------------------------------------------------------------------------------
    def due(self) -> bool:
        return self.pending_rows >= self.flush_every_ops or (
            bool(self.pending) and time.monotonic() - self.last_flush >= self.flush_every_seconds
        )

    def maybe_flush(self) -> bool:
        return self.flush() if self.due() else True

    def flush(self, wait_seconds: float | None = None) -> bool:
        """Write the spool (if any) and the queue in one transaction; spool the queue on failure.

        Returns True when everything reached the database."""
        claimed = claim_spool(self.spool_dir)
        spooled = [op for f in claimed for op in read_spool(f)]
        ops = self.pending
        self.pending, self.pending_rows = [], 0
        self.last_flush = time.monotonic()
        if not spooled and not ops:
            for f in claimed:
                f.unlink(missing_ok=True)
            return True
        try:
            with transaction(self.lab, wait_seconds=self.wait_seconds if wait_seconds is None else wait_seconds) as con:
                apply_ops(con, spooled + ops)
                if in_transaction_hook is not None:
                    in_transaction_hook(spooled + ops)
        except LabBusyError:
            if ops:
                append_spool(self.spool_path, ops)
                self.spooled_batches += 1
            return False
        except LabError:
            # Disk full, permissions: keep the rows for a later replay if the spool can still be
            # written (on a full disk it usually cannot), then let the caller fail the run.
            if ops:
                try:
                    append_spool(self.spool_path, ops)
                    self.spooled_batches += 1
                except OSError:
                    pass
            raise
        for f in claimed:
            f.unlink(missing_ok=True)
        return True

    def close(self, wait_seconds: float = 30.0) -> bool:
        """Final flush with a longer wait; whatever still cannot be written stays in the spool
        (returns False then, and never raises: it runs while another error may be on its way out)."""
        try:
            return self.flush(wait_seconds=wait_seconds)
        except LabError:
            return False
        finally:
            self.owner.release()


@contextmanager
def spool_of(folder: Path) -> Iterator[list[Op]]:
    """The ops spooled in a run folder whose writer has closed or died, to apply in a transaction.

    Yields nothing while the folder's writer is alive (replaying then could reorder its writes). The
    spool files are deleted only when the caller's block ends without an error: a transaction that
    fails leaves them for the next replay."""
    if not folder.is_dir():  # nothing was ever spooled there (and no run folder is made for it)
        yield []
        return
    lock = OwnerLock(folder)
    if not lock.acquire():
        yield []
        return
    try:
        claimed = claim_spool(folder)
        yield [op for f in claimed for op in read_spool(f)]
        for f in claimed:
            f.unlink(missing_ok=True)
    finally:
        lock.release()


def replay_spools(lab: Lab, wait_seconds: float = 30.0, folders: Iterable[Path] | None = None) -> int:
    """Replay the spools of runs whose writer closed or died (every run's, or those in ``folders``);
    returns how many were replayed."""
    n = 0
    for folder in sorted({p.parent for p in lab.runs.glob("*/spool*")} if folders is None else set(folders)):
        with spool_of(folder) as ops:
            if ops:
                with transaction(lab, wait_seconds=wait_seconds) as con:
                    apply_ops(con, ops)
                n += 1
    return n


def write_now(lab: Lab, ops: list[Op], wait_seconds: float = 30.0) -> None:
    """Write operations immediately in one transaction (for things a person waits on)."""
    with transaction(lab, wait_seconds=wait_seconds) as con:
        apply_ops(con, ops)
