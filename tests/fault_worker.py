"""Test-only entry point: ``python -m tests.fault_worker MARKER ARGS...`` is ``python -m engine ARGS...``
with a fault point installed in the database writer.

The first flush that writes step metrics stops inside its open transaction (after its rows are
applied, before COMMIT), creates the file MARKER holding its pid and sleeps, so a crash test can
SIGKILL the process in the middle of a real database write. Production code never installs it.
"""

from __future__ import annotations

import os
import sys
import time

import db.writer
from findings.cli import main


def pause_in_write(marker: str):
    def hook(ops: list[db.Op]) -> None:
        if not os.path.exists(marker) and any(op.table == "step_metrics" for op in ops):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)

    return hook


if __name__ == "__main__":
    marker, *argv = sys.argv[1:]
    db.writer.in_transaction_hook = pause_in_write(marker)
    sys.exit(main(argv))
