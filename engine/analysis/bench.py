"""``python -m engine bench analysis``: the analysis of a default-sized run (2048 features, 2 x 100k
tokens), ground-truth concept evaluation included, against its 20 s target, and the inspector's
query against its 100 ms target.

Named in the bench CLI's list of benchmarks (``engine.bench.cli.run_bench``).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from core.lab import Lab
from db import ensure_schema, query
from engine.analysis.analyze import analyze_run
from engine.analysis.queries import feature_detail
from engine.config import ExperimentConfig
from engine.pipeline import run_experiment
from engine.runs import group_id_of

ANALYSIS_TARGET_S = 20.0
INSPECTOR_TARGET_MS = 100.0


def default_run(lab: Lab, progress: bool) -> str:
    """A finished run of the default experiment in the bench lab, trained now if there is none."""
    config = ExperimentConfig().validate()
    ensure_schema(lab)
    sql = "SELECT run_id FROM runs WHERE status = 'FINISHED' AND group_id = ? ORDER BY train_domain DESC, ended_at DESC LIMIT 1"
    rows = query(lab, sql, [group_id_of(config)])
    if rows.empty:
        print("bench analysis: training the default experiment first (2 SAEs, 2048 features, TopK k=16, 2 x 100k tokens)")
        run_experiment(config, lab, progress=progress)
        rows = query(lab, sql, [group_id_of(config)])
    return str(rows.iloc[0, 0])


def bench_analysis(args, lab: Lab, out: dict) -> None:
    run_id = default_run(lab, not args.quiet)
    t0 = time.perf_counter()
    summary = analyze_run(lab, run_id, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    # Again with the model and code warm, as after training in a sweep (and a replace, not a first write).
    t0 = time.perf_counter()
    warm = analyze_run(lab, run_id)
    warm_seconds = time.perf_counter() - t0
    live = query(lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead", [run_id])["feature"].to_numpy()
    feats = np.random.default_rng(0).choice(live, size=min(20, len(live)), replace=False)
    times, sizes = [], []
    for f in feats:  # each call opens its own connection, as the app does
        t0 = time.perf_counter()
        d = feature_detail(lab, run_id, int(f))
        times.append((time.perf_counter() - t0) * 1000)
        sizes.append(sum(len(v["top"]) + len(v["quantile"]) for v in d["contexts"].values()))
    med = statistics.median(times)
    print(f"\nFeature analysis of run {run_id} ({summary['d_sae']} features, {', '.join(summary['domains'])}):")
    stages = ", ".join(f"{k} {v:.2f}" for k, v in summary["timings"].items())
    print(f"  first analysis in the process {seconds:6.2f} s   target <= {ANALYSIS_TARGET_S:.0f} s: "
          f"{'met' if seconds <= ANALYSIS_TARGET_S else 'NOT met'}")
    print(f"    stages (s): {stages}")
    print(f"  again, warm (replaces it)     {warm_seconds:6.2f} s")
    c = summary.get("concepts") or {}
    if c.get("n_concepts"):
        t = summary["timings"]
        print(f"    of which ground-truth concepts {t.get('concepts', 0):.2f} s "
              f"(memberships {t.get('concepts_members', 0):.2f} s, scores {t.get('concepts_eval', 0):.2f} s; "
              f"warm {warm['timings'].get('concepts', 0):.2f} s): {c['n_concepts']} concepts, "
              f"coverage {c['coverage']:.0%} (model dims {c['coverage_baseline']:.0%}), "
              f"1-latent probe {c['probe_k1']:.3f} vs {c['probe_k1_baseline']:.3f}")
    print(f"  inspector query (feature_detail, own connection each, 20 features): median {med:.1f} ms, "
          f"max {max(times):.1f} ms, {int(np.mean(sizes))} contexts per feature   "
          f"target <= {INSPECTOR_TARGET_MS:.0f} ms: {'met' if med <= INSPECTOR_TARGET_MS else 'NOT met'}")
    out["analysis"] = {
        "run_id": run_id, "seconds": seconds, "warm_seconds": warm_seconds, "timings": summary["timings"],
        "warm_timings": warm["timings"], "inspector_ms_median": med, "inspector_ms_max": max(times),
        "inspector_ms": times, "n_contexts": summary["n_contexts"], "concepts": summary.get("concepts"),
    }

