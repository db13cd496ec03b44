"""``python -m engine bench analysis``: the analysis of a default-sized run (2048 features, 2 x 100k
tokens), ground-truth concept evaluation included, against its 20 s target (stage by stage: in a
fresh process, warm, and right after an evaluation that leaves the held-out codes as a sweep
worker's does), the encoder pass side by side with the previous one, and the inspector's query
against its 100 ms target.

Named in the bench CLI's list of benchmarks (``engine.bench.cli.run_bench``).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from core.lab import Lab
from db import ensure_schema, query
from engine.analysis.analyze import analyze_run
from engine.analysis.queries import feature_detail
from engine.artifacts import load_run, stores_for_run
from engine.config import ExperimentConfig
from engine.evaluation.codes import CHUNK_ROWS, Encoder, encode_range
from engine.evaluation.metrics import evaluate_reconstruction
from engine.pipeline import run_experiment
from engine.runs import group_id_of

ANALYSIS_TARGET_S = 3.0  # issue 17
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


def _stages(timings: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in timings.items())


def evaluate_leaving_codes(lab: Lab, run_id: str) -> float:
    """What a sweep worker does right before the analysis: evaluation on every domain's held-out rows,
    leaving their codes for it (``engine.runs.evaluate_sae(codes_run_id=...)``); returns its seconds."""
    run = load_run(lab, run_id, "cpu")
    stores, _ = stores_for_run(lab, run.resolved, run.config)
    t0 = time.perf_counter()
    for store in stores.values():
        evaluate_reconstruction(run.sae, store.acts(run.config.hook, run.config.layer), store.val_start, store.n_rows,
                                torch.device("cpu"), keep_codes=(run_id, store.key, run.config.hook, run.config.layer))
    return time.perf_counter() - t0


def encode_side_by_side(lab: Lab, run_id: str, rounds: int = 2) -> dict[str, float]:
    """Seconds to encode every row of the run's domains: the previous per-chunk ``sae.encode_sparse``
    (fp32) against ``engine.evaluation.codes.Encoder`` in fp32 and with bf16 selection, interleaved."""
    run = load_run(lab, run_id, "cpu")
    stores, _ = stores_for_run(lab, run.resolved, run.config)
    sites = [s.acts(run.config.hook, run.config.layer) for s in stores.values()]

    @torch.inference_mode()
    def previous() -> None:
        for acts in sites:
            for a in range(0, len(acts), CHUNK_ROWS):
                code = run.sae.encode_sparse(torch.from_numpy(np.asarray(acts[a : a + CHUNK_ROWS], dtype=np.float32)))
                keep = code.vals > 0
                (code.rows[keep].to(torch.int32) + a).numpy(), code.cols[keep].to(torch.int32).numpy(), code.vals[keep].numpy()

    contenders = {"previous fp32": previous}
    for name, bf16 in (("fp32", False), ("bf16 select", True)):
        enc = Encoder.of(run.sae, "cpu", bf16=bf16)
        if name == "fp32" or enc.bf16:
            contenders[name] = lambda enc=enc: [encode_range(enc, acts, 0, len(acts)) for acts in sites]
    total = dict.fromkeys(contenders, 0.0)
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            total[name] += time.perf_counter() - t0
    return {k: v / rounds for k, v in total.items()}


def bench_analysis(args, lab: Lab, out: dict) -> None:
    run_id = default_run(lab, not args.quiet)
    t0 = time.perf_counter()
    summary = analyze_run(lab, run_id, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    # Again with the model and code warm, as after training in a sweep (and a replace, not a first write).
    t0 = time.perf_counter()
    warm = analyze_run(lab, run_id)
    warm_seconds = time.perf_counter() - t0
    # As in a sweep worker: evaluation first, which leaves the held-out codes for the analysis.
    eval_seconds = evaluate_leaving_codes(lab, run_id)
    t0 = time.perf_counter()
    after_eval = analyze_run(lab, run_id)
    after_eval_seconds = time.perf_counter() - t0
    encode = encode_side_by_side(lab, run_id)
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
    print(f"  first analysis in the process {seconds:6.2f} s   target <= {ANALYSIS_TARGET_S:.0f} s: "
          f"{'met' if seconds <= ANALYSIS_TARGET_S else 'NOT met'}")
    print(f"    stages (s): {_stages(summary['timings'])}")
    print(f"  again, warm (replaces it)     {warm_seconds:6.2f} s")
    print(f"    stages (s): {_stages(warm['timings'])}")
    print(f"  after evaluation (as in a worker: {after_eval['reused_code_rows']:,} held-out rows' codes reused; "
          f"the evaluation took {eval_seconds:.2f} s) {after_eval_seconds:6.2f} s")
    print(f"    stages (s): {_stages(after_eval['timings'])}")
    base = encode.get("previous fp32", 0.0)
    print("  encoding every row (mean of 2 interleaved rounds): "
          + ", ".join(f"{k} {v:.2f} s ({base / v:.2f}x)" for k, v in encode.items() if v > 0))
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
        "warm_timings": warm["timings"], "after_eval_seconds": after_eval_seconds, "after_eval_timings": after_eval["timings"],
        "eval_seconds": eval_seconds, "encode_seconds": encode, "inspector_ms_median": med, "inspector_ms_max": max(times),
        "inspector_ms": times, "n_contexts": summary["n_contexts"], "concepts": summary.get("concepts"),
    }

