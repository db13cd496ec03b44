"""The only place that opens the lab's DuckDB file.

DuckDB lets one process write *or* several processes read a file, never both at once. Workers,
the CLI and the app therefore each hold the file for one transaction or one query and let go;
a process that finds it locked backs off (bounded, jittered, doubling) and tries again.
"""

from __future__ import annotations

import random
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import duckdb

from core.errors import LabBusyError, LabError, disk_full_error, first_line, is_disk_full
from core.lab import Lab

# One connection at a time per process: DuckDB refuses a second in-process connection with a
# different configuration (read-only vs read-write), and concurrent transactions from a worker's
# heartbeat thread and its main thread could conflict. Each holds the file for milliseconds.
_PROCESS_LOCK = threading.RLock()

# Read-only connections for people's SQL: no file system, no extensions, settings frozen.
SANDBOX_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def _is_lock_error(err: Exception) -> bool:
    text = str(err).lower()
    return "lock" in text and ("conflict" in text or "could not set" in text)


def _open(path: Path, read_only: bool, config: dict[str, Any] | None) -> duckdb.DuckDBPyConnection:
    config = dict(config or {})
    lock = config.pop("lock_configuration", False)
    con = (duckdb.connect(str(path), read_only=read_only, config=config) if config
           else duckdb.connect(str(path), read_only=read_only))
    # DuckDB draws a progress bar on stdout for statements over 2 s, even into redirected logs.
    con.execute("SET enable_progress_bar = false")
    if lock:
        con.execute("SET lock_configuration = true")  # after our own SET: nothing can change settings now
    return con


@contextmanager
def connect(
    lab: Lab,
    *,
    read_only: bool = False,
    wait_seconds: float = 30.0,
    sandbox: bool = False,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the lab database for one short unit of work, retrying while another process holds it."""
    path = lab.db
    if read_only and not path.exists():
        raise LabError(f"no lab database at {path}: run `python -m engine run` (or `make lab`) to create one")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    delay = 0.01
    if not _PROCESS_LOCK.acquire(timeout=max(wait_seconds, 0.001)):
        raise LabBusyError(f"the lab database {path} stayed busy in this process for {wait_seconds:.0f} s: retry")
    try:
        while True:
            try:
                con = _open(path, read_only, SANDBOX_CONFIG if sandbox else None)
                break
            except duckdb.IOException as e:
                if not _is_lock_error(e):
                    raise _open_error(path, read_only, e) from None
                if time.monotonic() >= deadline:
                    raise LabBusyError(
                        f"the lab database {path} stayed locked by another process for {wait_seconds:.0f} s: "
                        "wait for it to finish or stop it, then retry"
                    ) from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)
        try:
            yield con
        finally:
            _close(con)
    finally:
        _PROCESS_LOCK.release()


def _open_error(path: Path, read_only: bool, e: Exception) -> LabError:
    """One line for a database file that cannot be opened (not for a lock held elsewhere)."""
    text = first_line(e)
    if is_disk_full(e):
        return disk_full_error(path)
    if "permission denied" in text.lower():
        if read_only:
            return LabError(f"cannot read the lab database {path}: permission denied; ask its owner for read access (chmod a+r)")
        return LabError(f"cannot write the lab database {path}: permission denied for this user; make it and its folder "
                        "writable (chmod / chown), or use a read-only command (sql, sweep-status, findings list/show/export)")
    return LabError(f"cannot open the lab database {path}: {text}")


def _close(con: duckdb.DuckDBPyConnection) -> None:
    """Close, ignoring a failed checkpoint on close: what was committed is in the WAL already and
    is replayed on the next open (a full disk must not turn one error into three)."""
    try:
        con.close()
    except duckdb.Error:
        pass


def query(lab: Lab, sql: str, params: list[Any] | tuple[Any, ...] | None = None, *, wait_seconds: float = 30.0):
    """Run one read query and return a pandas DataFrame."""
    with connect(lab, read_only=True, wait_seconds=wait_seconds) as con:
        return con.execute(sql, params or []).df()


def query_rows(lab: Lab, sql: str, params: list[Any] | tuple[Any, ...] | None = None, *,
               wait_seconds: float = 30.0) -> list[tuple]:
    with connect(lab, read_only=True, wait_seconds=wait_seconds) as con:
        return con.execute(sql, params or []).fetchall()


@contextmanager
def interrupt_after(con: duckdb.DuckDBPyConnection, seconds: float | None) -> Iterator[None]:
    """Interrupt a query that runs longer than ``seconds`` (DuckDB has no statement timeout)."""
    if not seconds:
        yield
        return
    timer = threading.Timer(seconds, con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
