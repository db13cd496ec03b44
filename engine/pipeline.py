"""The experiment pipeline the CLI's ``collect``, ``train``, ``eval`` and ``run`` commands drive."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from core.errors import DiskFullError, LabError, first_line
from core.lab import Lab
from db import Op, query, utcnow, write_now
from engine.artifacts import collect_for, load_run, run_row_exists, stores_for_run
from engine.collection.store import ActivationStore
from engine.config import ExperimentConfig
from engine.device import pick_device
from engine.recording import RunRecorder
from engine.run_owner import remove_temporary_files
from engine.runs import RunOutcome, RunSpec, complete_run, evaluate_sae, plan_runs, prepare_run, share_key
from engine.training.group import Member, train_together
from engine.training.trainer import TrainHooks, TrainingCancelled


def record_activation_set(lab: Lab, store: ActivationStore) -> None:
    m = store.meta
    row = {
        "key": m["key"], "model": m["model"], "domain": m["domain"], "source": m["source"],
        "n_tokens": m["n_rows"], "n_sequences": m["n_sequences"], "seq_len": m["seq_len"], "seed": m["seed"],
        "hooks": sorted(m["sites"]), "path": lab.relative(store.path), "created_at": utcnow(),
    }
    write_now(lab, [Op("insert", "activation_sets", list(row), [list(row.values())], on_conflict="replace")])


def collect(config: ExperimentConfig, lab: Lab, progress: bool = True) -> dict[str, ActivationStore]:
    stores = collect_for(config, lab, progress)
    for store in stores.values():
        record_activation_set(lab, store)
    return stores


class _TermAsInterrupt:
    """Turn SIGTERM into KeyboardInterrupt so a terminated run flushes and is marked KILLED."""

    def __enter__(self):
        self.prev = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            raise KeyboardInterrupt("terminated")

        try:
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            self.prev = None
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)
        return False


@dataclass
class RunCallbacks:
    """What the caller of a recorded run hears of it (a worker's job reporter, the CLI's phase lines).

    ``on_checkpoint(step)`` is called after each checkpoint is on disk (with every row logged before
    it already written): the Ray backend sends both back to its driver then."""

    should_stop: Callable[[], bool] | None = None
    extra_log: Callable[[int, int, dict[str, float]], None] | None = None
    on_start: Callable[[dict], None] | None = None
    on_phase: Callable[[str], None] | None = None
    on_checkpoint: Callable[[int], None] | None = None


def recorded_run(spec: RunSpec, lab: Lab, calls: RunCallbacks, progress: bool = False, evaluate: bool = True,
                 device: torch.device | None = None, own_rng: bool = False) -> Member:
    """A run as a group member (``engine.training.group``): RUNNING → FINISHED, or FAILED / KILLED with
    the reason. It yields its trainer whenever it wants the next batch and returns its outcome."""
    rec = RunRecorder(lab, spec)

    def on_log(step: int, tokens: int, metrics: dict[str, float]) -> None:
        rec.log(step, tokens, metrics)
        if calls.extra_log:
            calls.extra_log(step, tokens, metrics)

    def started(resolved: dict) -> None:
        rec.start(resolved)
        if calls.on_start:
            calls.on_start(resolved)

    # Everything logged before a checkpoint is made durable first, so a resumed run has no gaps.
    hooks = TrainHooks(on_log=on_log, should_stop=calls.should_stop, before_checkpoint=lambda step: rec.writer.flush(),
                       on_checkpoint=calls.on_checkpoint)
    folder = lab.run_dir(spec.run_id)
    try:
        clock = time.perf_counter()
        prepared = prepare_run(spec, lab, hooks, on_start=started, progress=progress, device=device,
                               on_phase=calls.on_phase)
        seconds = {"collect": time.perf_counter() - clock, "train": 0.0}
        if calls.on_phase:
            calls.on_phase("train")
        trainer = prepared.trainer
        trainer.begin(resume=True, own_rng=own_rng)
        while not trainer.done_training:
            step, x = yield trainer  # its own steps only: the others' run while it waits here
            clock = time.perf_counter()
            trainer.take_step(step, x)
            seconds["train"] += time.perf_counter() - clock
        clock = time.perf_counter()
        result = trainer.end()
        seconds["train"] += time.perf_counter() - clock + trainer.gather_seconds
        clock = time.perf_counter()
        outcome = complete_run(prepared, lab, result, evaluate, calls.on_phase)
        seconds["eval"] = time.perf_counter() - clock
        clock = time.perf_counter()
        rec.finish(outcome)
        seconds["database"] = time.perf_counter() - clock
        outcome.phase_seconds = {k: round(v, 3) for k, v in seconds.items()}
        return outcome
    except TrainingCancelled:
        remove_temporary_files(folder)  # the checkpoint stays: a cancelled job may be resumed
        rec.end("KILLED", "cancelled")
        raise
    except KeyboardInterrupt:
        remove_temporary_files(folder)
        if rec.started:
            rec.end("KILLED", "interrupted")
        raise
    except Exception as e:
        # Half-written files go first: on a full disk that frees the space the status write needs.
        remove_temporary_files(folder, checkpoint=True)
        msg = first_line(e)
        has_row = rec.started or run_row_exists(lab, spec.run_id)
        recorded = rec.end("FAILED", f"{type(e).__name__}: {msg}"[:500]) if has_row else True
        if isinstance(e, DiskFullError):
            later = "" if recorded else " (the next command that writes to the lab records that)"
            raise DiskFullError(f"run {spec.run_id} FAILED{later}: {e}") from None
        raise
    finally:
        rec.close()
        if not rec.started and not run_row_exists(lab, spec.run_id):
            shutil.rmtree(folder, ignore_errors=True)  # never started: nothing refers to its folder (lock, config)


def run_group_locally(specs: list[RunSpec], lab: Lab, calls: list[RunCallbacks] | None = None, progress: bool = False,
                      evaluate: bool = True, device: torch.device | None = None,
                      on_end: Callable[[int, RunOutcome | BaseException], None] | None = None
                      ) -> list[RunOutcome | BaseException]:
    """Train runs that share their batches (``engine.runs.share_key``) in one pass, each recorded as
    if it ran alone; returns each run's outcome or the exception it ended with (a KeyboardInterrupt
    is raised, after every run still training is recorded KILLED). ``on_end(i, result)``: run ``i``
    has just ended (see ``train_together``)."""
    calls = calls or [RunCallbacks() for _ in specs]
    keys = {share_key(s) for s in specs}
    if len(keys) > 1:
        raise ValueError(f"runs of one group must share their batches (share_key): got {len(keys)} keys")
    dev = device or pick_device(specs[0].config.device)
    members = [recorded_run(s, lab, c, progress, evaluate, dev, own_rng=len(specs) > 1) for s, c in zip(specs, calls)]
    with _TermAsInterrupt():
        return train_together(members, dev, on_end)


def run_locally(
    spec: RunSpec,
    lab: Lab,
    progress: bool = False,
    evaluate: bool = True,
    device: torch.device | None = None,
    should_stop: Callable[[], bool] | None = None,
    extra_log: Callable[[int, int, dict[str, float]], None] | None = None,
    on_start: Callable[[dict], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> RunOutcome:
    """Execute one run and record it (a group of one); its failure or cancel is raised."""
    calls = RunCallbacks(should_stop, extra_log, on_start, on_phase, on_checkpoint)
    (result,) = run_group_locally([spec], lab, [calls], progress, evaluate, device)
    if isinstance(result, BaseException):
        raise result
    return result


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_experiment(config: ExperimentConfig, lab: Lab, progress: bool = True, evaluate: bool = True,
                   tags: list[str] | None = None, analyze: bool = True) -> list[RunOutcome]:
    """Collect every domain (one pass each, all layers), then train, evaluate and analyse one SAE per
    training domain (a failed analysis warns and leaves the run FINISHED).

    With ``progress``, each phase is announced once, on a line naming the run it belongs to; the
    progress bars are drawn only on a terminal (where they redraw in place): written to a file or a
    pipe, a bar would print a line per update."""
    bars = progress and sys.stderr.isatty()
    specs = plan_runs(config, tags=tags)
    if progress:
        _say(f"collecting activations: {', '.join(config.domain_names)} "
             f"({config.data.tokens_per_domain:,} tokens each, {config.model})")
    collect(config, lab, bars)
    outcomes = []
    for i, spec in enumerate(specs, 1):
        who = f"run {i}/{len(specs)} {spec.name} [{spec.run_id}]"

        def announce(phase: str, who: str = who) -> None:
            if phase != "collect":  # collected above, for every run at once
                _say(f"{who}: {PHASES.get(phase, phase)}")

        outcomes.append(run_locally(spec, lab, bars, evaluate, on_phase=announce if progress else None))
        if analyze and evaluate:  # its one line ("feature analysis done in …") names the run
            # deferred: the analysis loads scipy and scikit-learn, which a run without it never needs
            from engine.analysis.analyze import analyze_after_training

            analyze_after_training(lab, spec.run_id, progress)
    return outcomes


PHASES = {"train": "training", "eval": "evaluating on every domain (transfer, splice, quality)"}


def evaluate_existing(lab: Lab, run_id: str, progress: bool = False) -> dict[str, Any]:
    """Re-evaluate a finished run (e.g. after `train`, or with new eval settings) and record it."""
    run = load_run(lab, run_id)  # unknown or damaged run -> one LabError
    resolved, config, sae = run.resolved, run.config, run.sae
    spec = RunSpec(run_id, resolved.get("group_id", ""), resolved.get("train_domain", ""), config)
    device = pick_device(config.device)  # the device load_run put the SAE on
    stores, _notes = stores_for_run(lab, resolved, config)  # the very text the run saw, by key
    evals, splices, quality, _ = evaluate_sae(sae, config, spec.train_domain, stores, device,
                                              train_steps=(resolved.get("training") or {}).get("total_steps"))
    rec = RunRecorder(lab, spec)
    try:
        rec.record_evaluation(evals, splices, quality)
        rec.writer.flush(wait_seconds=30)
    finally:
        rec.close()
    # deferred: the analysis's modules load scipy, which training and evaluating never need
    from engine.analysis.quality_update import rescore_quality

    quality = rescore_quality(lab, run_id, resolved) or quality  # an analysed run keeps the analysis-time rule
    return {"evals": evals, "splices": splices, "quality": quality}


def transfer_matrix(lab: Lab, group_id: str | None = None):
    """MSE of each (train domain → eval domain) pair for one group (default: the latest finished)."""
    if group_id is None:
        rows = query(lab, "SELECT group_id FROM runs WHERE status = 'FINISHED' ORDER BY ended_at DESC LIMIT 1")
        if rows.empty:
            raise LabError("no finished runs in this lab yet: run `python -m engine run` first")
        group_id = rows.iloc[0, 0]
    return query(
        lab,
        """SELECT r.train_domain, e.eval_domain, e.mse, e.fvu, e.r2, e.transfer_ratio, q.score, q.rating
           FROM runs r JOIN eval_results e USING (run_id) LEFT JOIN quality_scores q USING (run_id)
           WHERE r.group_id = ? ORDER BY r.train_domain, e.eval_domain""",
        [group_id],
    )
