"""The lab's engine: collection -> training -> evaluation -> analysis, results into DuckDB."""

import ctypes
import os


def _keep_large_blocks_on_heap() -> None:
    """Make glibc reuse freed large blocks instead of returning them to the OS.

    Training allocates the same 8-32 MB temporaries every step; by default glibc serves blocks of
    32 MB and up with a fresh mmap, and the page faults on that memory cost about a third of the
    encoder's matmul time (measured in `python -m engine bench`). Harmless elsewhere."""
    if os.environ.get("SAE_LAB_DEFAULT_MALLOC"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks below 1 GiB from the heap
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD: keep up to 2 GiB of freed heap for reuse
    except (OSError, AttributeError):
        pass


_keep_large_blocks_on_heap()
