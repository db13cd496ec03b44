"""User-facing errors.

Every error a researcher can cause by typing something wrong is a ``LabError``: the CLI prints its
message on one line and exits non-zero, so the message must name the problem *and* the fix.

The machine can fail too: a full disk, a folder the user cannot write, a path that is a file.
Those surface from deep inside numpy, torch, safetensors or DuckDB with their own exception types
(a full disk is an ``OSError`` from a plain write, a ``RuntimeError`` from ``torch.save``, a
``SafetensorError`` from ``save_file``, a ``TransactionException`` from DuckDB), so the places that
write wrap their writes in ``writing_to(path)``, which turns any of them into one ``DiskFullError``
naming the file, and ``os_error`` gives the CLI one line for the rest.
"""

from __future__ import annotations

import errno
import getpass
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class LabError(Exception):
    """A problem with the user's input or the lab's state, with a one-line message naming the fix."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class LabBusyError(LabError):
    """Another process held the lab database for longer than we were willing to wait."""

    exit_code = 3


class DiskFullError(LabError):
    """A write failed because the disk (or the user's quota) is full."""

    exit_code = 4


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_TEXT = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")
# A write that failed with less than this left on its file system failed because the disk is full,
# whatever the library called it (torch.save says "unexpected pos", np.save "requested and written").
LOW_SPACE_BYTES = 1 << 20


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def free_bytes(path: str | Path) -> int | None:
    """Bytes this user may still write on the file system holding ``path`` (its nearest existing folder)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def is_disk_full(exc: BaseException, path: str | Path | None = None) -> bool:
    """Whether ``exc`` (or what caused it) means the disk is full; with ``path``, a failed write that
    left less than ``LOW_SPACE_BYTES`` free there counts too (call it before cleaning up)."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
            return True
        if any(t in str(e).lower() for t in _DISK_FULL_TEXT):
            return True
    if path is not None and isinstance(exc, (OSError, RuntimeError)):
        free = free_bytes(path)
        return free is not None and free < LOW_SPACE_BYTES
    return False


def disk_full_error(path: str | Path) -> DiskFullError:
    free = free_bytes(path)
    left = f"{free / 2**20:.1f} MiB left" if free is not None else "no space left"
    return DiskFullError(f"the disk holding {path} is full ({left}): free some space there (or move the lab to a bigger "
                         "disk and pass --lab), then run again")


@contextmanager
def writing_to(path: str | Path) -> Iterator[None]:
    """Writes inside this block that fail because the disk is full raise one ``DiskFullError`` naming
    ``path``; anything else passes through unchanged. Clean up partial files *outside* the block
    (after it raised), so the free-space check sees the disk as the write left it."""
    try:
        yield
    except LabError:
        raise
    except Exception as e:
        if is_disk_full(e, path):
            target = getattr(e, "filename", None) or path
            raise disk_full_error(target) from None
        raise


def os_error(e: OSError) -> LabError | None:
    """One-line error for an ``OSError`` the environment caused (disk full, permissions, a file where
    a folder should be), naming the file and the fix; None for anything else (a real bug)."""
    name = e.filename or "a file of the lab"
    if e.errno in _DISK_FULL_ERRNOS:
        return disk_full_error(name)
    if e.errno in (errno.EACCES, errno.EPERM):
        user = _user()
        return LabError(f"permission denied for {name} (running as {user}): make it writable by {user} (chmod / chown) "
                        "or point --lab at a folder you can write")
    if e.errno == errno.EROFS:
        return LabError(f"{name} is on a read-only file system: point --lab at a writable folder, or use a read-only "
                        "command (sql, sweep-status, findings list/show/export)")
    if e.errno == errno.ENOTDIR:
        return LabError(f"a part of the path {name} is a file, not a folder: point --lab at a folder")
    if e.errno == errno.EISDIR:
        return LabError(f"{name} is a folder where a file was expected: move it away or pick another path")
    return None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return f"uid {os.getuid()}"


def first_line(e: BaseException) -> str:
    """An exception's message on one line: its first line, or its type's name when it has no message.

    For a one-line error, log entry or error row that quotes a lower layer's (often multi-line) error."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
