"""Test-only entry point: ``python -m tests.fault_worker FAULT MARKER ARGS...`` is ``python -m engine ARGS...``
with a fault point installed. Production code never installs one.

``FAULT`` is one of:

- ``write``: the first flush that writes step metrics stops inside its open transaction (after its
  rows are applied, before COMMIT), creates the file MARKER holding its pid and sleeps, so a crash
  test can SIGKILL the process in the middle of a real database write.
- ``step=N``: every trainer writes a checkpoint once it has taken N steps; at its next step the
  process holds (mid-training, every trainer of a share group checkpointed at step N), creates
  MARKER and waits until the test deletes it. Each new group of trainers holds once. A test can so
  kill, cancel or starve a job *during* its training whatever the machine's speed: polling the
  live panel's step instead raced a training that, on an idle machine, ends in under a second.
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


def hold_in_training(marker: str, at_step: int) -> None:
    from engine.training.trainer import Trainer

    original = Trainer.take_step
    # Trainers kept, not their ids: a finished trainer's id may be reused by the next job's.
    checkpointed: list[Trainer] = []  # that checkpointed at step at_step
    held: list[Trainer] = []

    def take_step(self: Trainer, step: int, x, owned: bool = False) -> None:
        if step == at_step and any(t is self for t in checkpointed) and not any(t is self for t in held):
            held.extend(checkpointed)  # the group's other members, checkpointed too, do not hold again
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            while os.path.exists(marker):
                time.sleep(0.05)
        original(self, step, x, owned)
        if self.step == at_step and self.checkpoint_path is not None:
            self.save_checkpoint()
            checkpointed.append(self)

    Trainer.take_step = take_step


if __name__ == "__main__":
    fault, marker, *argv = sys.argv[1:]
    if fault == "write":
        db.writer.in_transaction_hook = pause_in_write(marker)
    elif fault.startswith("step="):
        hold_in_training(marker, int(fault.removeprefix("step=")))
    else:
        sys.exit(f"unknown fault {fault!r}: use 'write' or 'step=N'")
    sys.exit(main(argv))
