"""CLI: ``sweep``, ``worker``, ``sweep-status``, ``cancel``."""

from __future__ import annotations

import argparse

from core.config_base import apply_override, parse_override
from core.errors import LabError
from db import query
from engine.run_admin import run_info
from engine.run_owner import owner_alive, owner_of
from engine.sweeps.leaderboard import leaderboard, pareto_front
from engine.sweeps.spec import load_spec
from engine.tables import format_table


def cmd_sweep(args, lab) -> int:
    # deferred: loads torch, and the parser is built for every command
    from engine.sweeps.launch import ensure_workers
    from engine.sweeps.queue import enqueue_sweep, plan_sweep

    spec = load_spec(args.spec)
    if args.run_cap is not None:
        spec = spec.replace(run_cap=args.run_cap)
    for text in args.set:
        path, value = parse_override(text)
        base = dict(spec.base)
        apply_override(base, path, value)
        spec = spec.replace(base=base)

    def enqueue() -> None:
        sweep_id, runs = enqueue_sweep(lab, spec)
        print(f"sweep {sweep_id} ({spec.name}): {len(runs)} jobs queued, ranked by {spec.metric_name()} ({spec.goal()})",
              flush=True)

    if args.backend == "ray":
        if args.workers:
            raise LabError("--workers starts local worker processes: leave it out with --backend ray (the cluster's CPUs "
                           "decide how many jobs run at once)")
        plan_sweep(spec)  # a bad spec is refused before a Ray runtime starts
        return run_ray_driver(args, lab, enqueue=enqueue)
    enqueue()
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
               stale_seconds=args.stale_seconds, niceness=args.nice,
               group_size=args.group_size).run(wait=args.wait, max_jobs=args.max_jobs)
    print(f"worker done: {n} job(s) run")
    return 0


def run_ray_driver(args, lab, enqueue=None) -> int:
    """The Ray backend in the foreground: ``sweep --backend ray`` and ``ray-driver``."""
    # deferred: Ray is imported only when its backend is chosen (import_ray says how to install it)
    from engine.sweeps.ray_runtime import import_ray, last_address

    import_ray()
    # deferred: as above (the driver imports ray, torch and the job code)
    from engine.sweeps.ray_driver import RayDriver

    address = args.address if args.address is not None else (last_address(lab) if enqueue is None else None)
    if address == "local":
        address = None
    ship = None if args.checkpoint_every < 0 else args.checkpoint_every
    driver = RayDriver(lab, address=address or None, threads=args.threads or 1, analysis=not args.no_analysis,
                       max_retries=args.max_retries, ship_seconds=ship, stale_seconds=args.stale_seconds,
                       niceness=args.nice, num_cpus=args.num_cpus)
    n = driver.run(wait=getattr(args, "wait", False), enqueue=enqueue)
    print(f"ray driver done: {n} job(s) ended")
    return 0


def add_ray_args(s: argparse.ArgumentParser, for_sweep: bool) -> None:
    g = s.add_argument_group("ray backend" + (" (with --backend ray)" if for_sweep else ""))
    g.add_argument("--address", help="a Ray cluster's address (host:port, see `ray start --head`); 'local' or none: a Ray "
                                     "runtime on this machine" + ("" if for_sweep else " (none: where the lab's last driver "
                                                                                       "ran)"))
    g.add_argument("--num-cpus", type=int, help="CPUs of a Ray runtime started on this machine (default: all)")
    g.add_argument("--max-retries", type=int, default=3, help="times Ray reruns a job whose worker process died (default 3)")
    g.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                   help="send a running job's checkpoint to the driver at most this often (default 60; -1: never), so a "
                        "retry on another node or after a driver restart resumes from it")
    if not for_sweep:
        g.add_argument("--threads", type=int, default=1, help="CPUs (torch threads) each job's task reserves (default 1)")
        g.add_argument("--no-analysis", action="store_true", help="skip the feature analysis after each run")
        g.add_argument("--wait", action="store_true", help="keep waiting for new jobs instead of exiting when the queue "
                                                           "is empty")
        g.add_argument("--stale-seconds", type=float, default=30.0,
                       help="heartbeat age after which a job of a worker on ANOTHER host is requeued")
        g.add_argument("--nice", type=int, default=10, choices=range(0, 20), metavar="0-19",
                       help="scheduling niceness of the jobs' processes (default 10)")


def cmd_ray_driver(args, lab) -> int:
    return run_ray_driver(args, lab)


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
    cols = ["rank", "layer", "hook", "k", "d_sae", "architecture", "fvu", "r2", "transfer_ratio", "l0",
            "dead_frac", "score", "overall"]
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
    """Cancel jobs (or a sweep's), saying per id what happened; a stuck RUNNING job or run (its
    process is gone, so nothing can stop) is pointed at ``runs mark-failed`` instead."""
    # deferred: loads torch, and the parser is built for every command
    from engine.sweeps.queue import cancel_queued_and_flag_running

    if not args.job_ids and not args.sweep:
        raise LabError("nothing to cancel: pass job ids or --sweep SWEEP_ID")
    if not lab.db.exists():
        raise LabError(f"no lab database at {lab.db}: there is nothing to cancel (check --lab)")
    if args.sweep:
        n = cancel_queued_and_flag_running(lab, sweep_id=args.sweep)
        print(f"cancel requested for {n} job(s) of sweep {args.sweep}: queued ones are KILLED now, running ones stop at their "
              "next step")
        return 0
    ids = list(dict.fromkeys(args.job_ids))
    plans = [_cancel_plan(lab, i) for i in ids]  # decided for every id before anything is changed
    unknown = [i for i, (kind, _) in zip(ids, plans) if kind == "unknown"]
    if unknown:
        raise LabError(f"unknown job or run '{unknown[0]}': list them with python -m engine sql \"SELECT job_id, status FROM "
                       "jobs\" "
                       "(or SELECT run_id, status FROM runs)")
    to_cancel = [i for i, (kind, _) in zip(ids, plans) if kind == "cancel"]
    if to_cancel:
        cancel_queued_and_flag_running(lab, job_ids=to_cancel)
    for _, message in plans:
        print(message)
    return 0


def _cancel_plan(lab, item: str) -> tuple[str, str]:
    """("cancel" | "report" | "unknown", what cancel does or did with ``item``)."""
    # deferred: loads torch, and the parser is built for every command
    from engine.sweeps.queue import interrupted_jobs

    mark = f"python -m engine runs mark-failed {item}"
    job = query(lab, "SELECT status FROM jobs WHERE job_id = ?", [item])
    if len(job):
        status = job.iloc[0, 0]
        if status == "QUEUED":
            return "cancel", f"job {item}: was QUEUED, now KILLED (it will not run)"
        if status == "RUNNING" and item in {j.job_id for j in interrupted_jobs(lab)}:
            return "report", (f"job {item}: RUNNING, but its worker is gone, so nothing can stop it: a worker that starts "
                              f"resumes it; to end it instead, run {mark}")
        if status == "RUNNING":
            return "cancel", f"job {item}: RUNNING, asked to stop at its next step (it then ends KILLED)"
        return "report", f"job {item}: already {status}, nothing to cancel"
    info = run_info(lab, item)
    if info is None:
        return "unknown", ""
    if info["status"] != "RUNNING":
        return "report", f"run {item}: already {info['status']}, nothing to cancel"
    owner = owner_of(info)
    alive = owner_alive(lab, item, owner)
    if alive and owner is not None:
        return "report", (f"run {item}: RUNNING in {owner.describe()} (a train/run command, not a sweep job): stop it with "
                          f"Ctrl-C in its terminal or kill {owner.pid}; it then ends KILLED")
    if alive:
        return "report", f"run {item}: RUNNING in a live process (a train/run command, not a sweep job): stop that process"
    if alive is None:
        where = owner.host if owner else "its machine"
        return "report", f"run {item}: RUNNING on another machine ({where}): stop it there, or run {mark} there"
    who = owner.describe() if owner else "the process that ran it"
    return "report", f"run {item}: RUNNING, but {who} is gone, so nothing can stop it: nothing cancelled; end it with {mark}"


def add_sweep_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="validate a sweep (preset or spec file) and enqueue its jobs")
    s.add_argument("spec", help="layer-sweep, topk-sweep, everything, or a JSON/TOML sweep spec")
    s.add_argument("--run-cap", type=int, help="most jobs to enqueue")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the shared experiment settings")
    s.add_argument("--workers", type=int, default=0, help="also start this many background workers")
    s.add_argument("--threads", type=int, help="torch threads per background worker (ray: CPUs per job, default 1)")
    s.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: queue the jobs for worker processes (default); ray: run them as Ray tasks, with this "
                        "command as their driver until the queue is empty")
    s.add_argument("--no-analysis", action="store_true", help="ray: skip the feature analysis after each run")
    s.add_argument("--nice", type=int, default=10, choices=range(0, 20), metavar="0-19",
                   help="ray: scheduling niceness of the jobs' processes (default 10)")
    s.add_argument("--stale-seconds", type=float, default=30.0, help=argparse.SUPPRESS)
    add_ray_args(s, for_sweep=True)
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("ray-driver", help="run the queue's jobs on Ray (re-attaches a sweep whose driver was stopped or "
                                          "killed: its unfinished jobs resume from their checkpoints)")
    add_ray_args(s, for_sweep=False)
    s.set_defaults(fn=cmd_ray_driver)

    s = sub.add_parser("worker", help="drain the job queue (resumes interrupted jobs first)")
    s.add_argument("--threads", type=int, help="torch threads for this worker (default: all cores, or SAE_LAB_THREADS)")
    s.add_argument("--wait", action="store_true", help="keep waiting for new jobs instead of exiting when the queue is empty")
    s.add_argument("--max-jobs", type=int)
    s.add_argument("--group-size", type=int, default=8, choices=range(1, 65), metavar="1-64",
                   help="most jobs that share their activations trained together in one pass (default 8; 1: one at a time)")
    s.add_argument("--no-analysis", action="store_true", help="skip the feature analysis after each run")
    s.add_argument("--stale-seconds", type=float, default=30.0,
                   help="heartbeat age after which a job of a worker on ANOTHER host is requeued (on this host: at once)")
    s.add_argument("--nice", type=int, default=10, choices=range(0, 20), metavar="0-19",
                   help="scheduling niceness: 10 (default) leaves the CPU to the app and your terminal; 0 competes equally")
    s.set_defaults(fn=cmd_worker)

    s = sub.add_parser("sweep-status", help="a sweep's jobs, leaderboard, best overall and Pareto front")
    s.add_argument("sweep_id", nargs="?")
    s.add_argument("--top", type=int, default=20)
    s.set_defaults(fn=cmd_status, read_only=True)

    s = sub.add_parser("cancel", help="cancel jobs (queued: at once; running: at the next step); says what it did per id")
    s.add_argument("job_ids", nargs="*")
    s.add_argument("--sweep")
    s.set_defaults(fn=cmd_cancel, recover=False)
