"""CLI: ``sweep``, ``worker``, ``sweep-status``, ``cancel``."""

from __future__ import annotations

import argparse

from core.errors import LabError
from engine.tables import format_table
from engine.sweeps.spec import load_spec
from core.config_base import apply_override, parse_override
from db import query
from engine.sweeps.leaderboard import leaderboard, pareto_front


def cmd_sweep(args, lab) -> int:
    # deferred: loads torch, and the parser is built for every command
    from engine.sweeps.launch import ensure_workers
    from engine.sweeps.queue import enqueue_sweep

    spec = load_spec(args.spec)
    if args.run_cap is not None:
        spec = spec.replace(run_cap=args.run_cap)
    for text in args.set:
        path, value = parse_override(text)
        base = dict(spec.base)
        apply_override(base, path, value)
        spec = spec.replace(base=base)
    sweep_id, runs = enqueue_sweep(lab, spec)
    print(f"sweep {sweep_id} ({spec.name}): {len(runs)} jobs queued, ranked by {spec.metric_name()} ({spec.goal()})")
    if args.workers:
        started = ensure_workers(lab, args.workers, args.threads)
        print(f"started {started} worker(s) in the background (logs in {lab.root / 'logs'})")
    else:
        print(f"run them with: python -m engine --lab {lab.root} worker")
    return 0


def cmd_worker(args, lab) -> int:
    # deferred: loads torch, and the parser is built for every command
    from engine.sweeps.worker import Worker

    n = Worker(lab, threads=args.threads, progress=not args.quiet, analysis=not args.no_analysis,
               stale_seconds=args.stale_seconds).run(wait=args.wait, max_jobs=args.max_jobs)
    print(f"worker done: {n} job(s) run")
    return 0


def cmd_status(args, lab) -> int:
    # deferred: loads torch, and the parser is built for every command
    from engine.sweeps.queue import job_statuses

    if not lab.db.exists():
        raise LabError(f"no lab database at {lab.db}: launch a sweep first")
    sweep_id = args.sweep_id
    if not sweep_id:
        latest = query(lab, "SELECT sweep_id FROM sweeps ORDER BY created_at DESC LIMIT 1")
        if latest.empty:
            raise LabError("no sweeps in this lab yet: launch one with python -m engine sweep everything")
        sweep_id = latest.iloc[0, 0]
    sw = query(lab, "SELECT * FROM sweeps WHERE sweep_id = ?", [sweep_id])
    if sw.empty:
        raise LabError(f"unknown sweep '{sweep_id}': list sweeps with python -m engine sql \"select * from sweeps\"")
    s = sw.iloc[0]
    jobs = job_statuses(lab, sweep_id)
    counts = jobs["shown_status"].value_counts().to_dict()
    print(f"sweep {sweep_id} ({s['name']}, {s['method']}): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    running = jobs[jobs["shown_status"] == "RUNNING"]
    for r in running.itertuples():
        eta = f", ETA {r.eta_seconds:.0f} s" if r.eta_seconds == r.eta_seconds and r.eta_seconds is not None else ""
        print(f"  running {r.job_id} {r.label}: {r.phase} step {r.step}/{r.total_steps}{eta}")
    board = leaderboard(lab, sweep_id, s["metric"], s["goal"])
    if board.empty:
        print("no finished configurations yet")
        return 0
    cols = ["rank", "layer", "hook", "k", "d_sae", "architecture", "fvu", "r2", "transfer_ratio", "l0", "dead_frac", "score", "overall"]
    print(f"\nleaderboard by {s['metric']} ({s['goal']}); overall = (R2_in + 1/transfer + (1 - L0/d_in)) / 3:")
    print(format_table(board[cols].head(args.top)))
    best = board.sort_values("overall", ascending=False).iloc[0]
    print(f"\nbest overall: layer {best['layer']} {best['hook']}, k={best['k']}, d_sae={best['d_sae']} "
          f"(overall {best['overall']:.3f}, FVU {best['fvu']:.4f}, transfer x{best['transfer_ratio']:.2f}, L0 {best['l0']:.1f})")
    front = pareto_front(board)
    print("\nPareto front of FVU vs L0 per layer (no configuration beats these on both):")
    print(format_table(front[["layer", "k", "d_sae", "l0", "fvu"]]))
    return 0


def cmd_cancel(args, lab) -> int:
    # deferred: loads torch, and the parser is built for every command
    from engine.sweeps.queue import cancel_queued_and_flag_running

    if not args.job_ids and not args.sweep:
        raise LabError("nothing to cancel: pass job ids or --sweep SWEEP_ID")
    n = cancel_queued_and_flag_running(lab, job_ids=args.job_ids or None, sweep_id=args.sweep)
    print(f"cancel requested for {n} job(s): queued ones are KILLED now, running ones stop at their next step")
    return 0


def add_sweep_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="validate a sweep (preset or spec file) and enqueue its jobs")
    s.add_argument("spec", help="layer-sweep, topk-sweep, everything, or a JSON/TOML sweep spec")
    s.add_argument("--run-cap", type=int, help="most jobs to enqueue")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the shared experiment settings")
    s.add_argument("--workers", type=int, default=0, help="also start this many background workers")
    s.add_argument("--threads", type=int, help="torch threads per background worker")
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("worker", help="drain the job queue (resumes interrupted jobs first)")
    s.add_argument("--threads", type=int, help="torch threads for this worker (default: all cores)")
    s.add_argument("--wait", action="store_true", help="keep waiting for new jobs instead of exiting when the queue is empty")
    s.add_argument("--max-jobs", type=int)
    s.add_argument("--no-analysis", action="store_true", help="skip the feature analysis after each run")
    s.add_argument("--stale-seconds", type=float, default=30.0, help="heartbeat age after which a dead worker's job is requeued")
    s.set_defaults(fn=cmd_worker)

    s = sub.add_parser("sweep-status", help="a sweep's jobs, leaderboard, best overall and Pareto front")
    s.add_argument("sweep_id", nargs="?")
    s.add_argument("--top", type=int, default=20)
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("cancel", help="cancel jobs (queued: at once; running: at the next step)")
    s.add_argument("job_ids", nargs="*")
    s.add_argument("--sweep")
    s.set_defaults(fn=cmd_cancel)
