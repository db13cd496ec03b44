"""Training several SAEs in one pass over their shared batches.

SAEs trained on the same activations, domain, batch size and seed (``engine.runs.share_key``) see
the very same batches in the same order. Each is a *member*: a generator that yields its
``Trainer`` whenever it wants the next batch (``(step, x)`` is sent back) and returns its result
when it is done (or raises). ``train_together`` gathers every batch once and hands it to each
member in turn, so a group costs one read of the activation file instead of one per SAE.

A member's failure or cancel ends that member only: its exception becomes its result and the
others go on. A KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one) is thrown into every
member still training, so each records itself as interrupted, and then raised.

Each trainer keeps its own RNG state (``Trainer.begin(own_rng=True)``) and its own optimiser,
checkpoint, progress and cancel flag, so a member's numbers are what it would get alone.

Why not one stacked encoder product for the group (x against the members' concatenated encoders,
each member taking its slice), although issue 17 asked for it where shapes allow: measured, it
gains nothing. ``python -m engine bench trainer`` times one [2048 x 385] x [385 x 6144] GEMM against
three [385 x 2048] ones, interleaved: fp32 56 vs 56 GFLOP/s (x1.00), bf16 126 vs 129 GFLOP/s
(x0.98), on 1 thread of this 2-core EPYC (``sweep.mm_rate`` earlier: x0.73 to x0.99 on 1 thread,
x1.0 to x1.2 on 2 loaded threads -- noise either way). One SAE's encoder at batch 2048 is already
a GEMM large enough to run at the ``torch.mm`` rate, and the stacked [2048, 6144] result no longer
fits the cache. What keeps a group below the GEMM limit is each member's own work on its result
(top-k selection, sparse backward, Adam), which stacking does not touch. Stacking would also tie
the members' numerics together: each member centres x on its own b_dec, so the stacked product
needs b_dec folded into the bias, and a column block of a wider GEMM is not guaranteed to round as
the member's own GEMM does -- while a member trained in a group must end bit for bit as it would
alone (tests/engine/sweeps/test_share_groups.py).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Generator

import torch

from engine.training.trainer import Trainer

Member = Generator[Trainer, tuple[int, torch.Tensor], Any]


def _advance(member: Member, results: list[Any], i: int, send: tuple[int, torch.Tensor] | None,
             on_end: Callable[[int, Any], None] | None) -> Trainer | None:
    """The member's next request (its trainer), or None once it has returned or raised."""
    try:
        return next(member) if send is None else member.send(send)
    except StopIteration as stop:
        results[i] = stop.value
    except Exception as e:  # a member's failure (or cancel) is its result, not the group's
        results[i] = e
    if on_end is not None:
        on_end(i, results[i])
    return None


def train_together(members: list[Member], device: torch.device,
                   on_end: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Drive every member to its end; returns each one's result or the exception it ended with.

    ``on_end(i, result)`` is called as soon as member ``i`` ends (the others wait meanwhile): a
    worker closes that job there, instead of after the whole group."""
    results: list[Any] = [None] * len(members)
    waiting: dict[int, Trainer] = {}
    try:
        for i, member in enumerate(members):
            trainer = _advance(member, results, i, None, on_end)
            if trainer is not None:
                waiting[i] = trainer
        if not waiting:
            return results
        first = next(iter(waiting.values()))
        start = min(t.step for t in waiting.values())
        total = max(t.total_steps for t in waiting.values())
        batches = first.batches.iterate(start, total, device)
        while True:
            clock = time.perf_counter()
            step, x = next(batches, (None, None))
            if step is None:
                break
            # A member resumed from a later checkpoint than the others joins at its own step.
            takers = [i for i, trainer in waiting.items() if trainer.step == step]
            share = (time.perf_counter() - clock) / max(1, len(takers))
            for i in takers:
                waiting[i].gather_seconds += share  # each member's part of reading the batch it trained on
                nxt = _advance(members[i], results, i, (step, x), on_end)
                if nxt is None:
                    del waiting[i]
                else:
                    waiting[i] = nxt
            if not waiting:
                break
    except KeyboardInterrupt:
        for i in list(waiting):
            try:
                members[i].throw(KeyboardInterrupt("interrupted"))
            except (KeyboardInterrupt, StopIteration, Exception):  # each records itself
                pass
        raise
    return results
