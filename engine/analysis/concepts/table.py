"""Concept results as rows of ``concept_results``, and as the table a person reads."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.lab import Lab
from db import query
from engine.analysis.concepts.evaluate import COVERAGE_F1, ConceptResult

COLUMNS = ("run_id", "concept", "kind", "origin", "description", "domains", "status", "n_train_pos", "n_val_pos", "n_val",
           "best_latent", "threshold", "train_auroc", "auroc", "precision", "recall", "f1", "top_latents",
           "probe_k1", "probe_k2", "probe_k5", "baseline_k1", "baseline_k2", "baseline_k5", "baseline_dim", "baseline_f1",
           "full_probe_recall", "latents_to_90")


def _num(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def concept_rows(run_id: str, results: list[ConceptResult]) -> list[dict]:
    rows = []
    for r in results:
        rows.append({
            "run_id": run_id, "concept": r.concept, "kind": r.kind, "origin": r.origin, "description": r.description,
            "domains": list(r.domains), "status": r.status, "n_train_pos": r.n_train_pos, "n_val_pos": r.n_val_pos,
            "n_val": r.n_val, "best_latent": r.best_latent, "threshold": _num(r.threshold), "train_auroc": _num(r.train_auroc),
            "auroc": _num(r.auroc), "precision": _num(r.precision), "recall": _num(r.recall), "f1": _num(r.f1),
            "top_latents": list(r.top_latents) if r.status == "evaluated" else None,
            **{f"probe_k{k}": _num(r.probe.get(k)) for k in (1, 2, 5)},
            **{f"baseline_k{k}": _num(r.baseline.get(k)) for k in (1, 2, 5)},
            "baseline_dim": r.baseline_dim, "baseline_f1": _num(r.baseline_f1),
            "full_probe_recall": _num(r.full_probe_recall), "latents_to_90": r.latents_to_90,
        })
    return rows


_TYPES = {"n_train_pos": pa.int64(), "n_val_pos": pa.int64(), "n_val": pa.int64(), "best_latent": pa.int32(),
          "baseline_dim": pa.int32(), "latents_to_90": pa.int32(), "domains": pa.list_(pa.string()),
          "top_latents": pa.list_(pa.int32())}


def concept_table(run_id: str, results: list[ConceptResult]) -> pa.Table:
    rows = concept_rows(run_id, results)
    cols = {}
    for c in COLUMNS:
        text = c in ("run_id", "concept", "kind", "origin", "description", "status")
        t = _TYPES.get(c, pa.string() if text else pa.float64())
        cols[c] = pa.array([r[c] for r in rows], type=t)
    return pa.table(cols)


def format_concept_table(rows: list[dict], max_rows: int | None = None) -> str:
    """The concept table as text: concept, best latent, F1, probes k = 1/2/5 against the baseline."""
    ev = [r for r in rows if r["status"] == "evaluated"]
    ev.sort(key=lambda r: -(r["f1"] or 0))
    head = (f"{'concept':24s} {'latent':>6s} {'F1':>5s} {'AUROC':>5s}  {'probe k=1/2/5':>16s}  {'baseline k=1/2/5':>16s} "
            f"{'n90':>4s} {'held-out +':>10s}")
    lines = [head, "-" * len(head)]
    for r in ev[: max_rows or len(ev)]:
        probe = "/".join(f"{r[f'probe_k{k}']:.2f}" for k in (1, 2, 5))
        base = "/".join(f"{r[f'baseline_k{k}']:.2f}" for k in (1, 2, 5))
        n90 = "-" if r["latents_to_90"] is None else str(r["latents_to_90"])
        mark = " *" if (r["f1"] or 0) >= COVERAGE_F1 else ""
        lines.append(f"{r['concept'][:24]:24s} {r['best_latent']:>6d} {r['f1']:>5.2f} {r['auroc']:>5.2f}  {probe:>16s}  "
                     f"{base:>16s} {n90:>4s} {r['n_val_pos']:>10d}{mark}")
    skipped = [r["concept"] for r in rows if r["status"] != "evaluated"]
    if skipped:
        lines.append(f"not evaluated ({len(skipped)}, fewer than 20 held-out positives or no text): {', '.join(skipped)}")
    return "\n".join(lines)


def found_and_missed(rows: list[dict]) -> tuple[list[str], list[str]]:
    """Concepts with a latent at F1 >= 0.8, and evaluated concepts without one."""
    ev = [r for r in rows if r["status"] == "evaluated"]
    found = [r["concept"] for r in sorted(ev, key=lambda r: -(r["f1"] or 0)) if (r["f1"] or 0) >= COVERAGE_F1]
    missed = [r["concept"] for r in sorted(ev, key=lambda r: -(r["f1"] or 0)) if (r["f1"] or 0) < COVERAGE_F1]
    return found, missed


def run_concept_report(lab: Lab, run_id: str) -> str | None:
    """The concept table of one analysed run, with what its SAE finds and misses (None before analysis)."""
    df = query(lab, "SELECT * FROM concept_results WHERE run_id = ?", [run_id])
    if df.empty:
        return None
    rows = df.to_dict("records")
    m = query(lab, "SELECT concept_coverage, concept_coverage_baseline, probe_k1, probe_k1_baseline "
                   "FROM run_metrics WHERE run_id = ?",
              [run_id])
    lines = [format_concept_table(rows)]
    found, missed = found_and_missed(rows)
    if len(m) and m.iloc[0]["concept_coverage"] == m.iloc[0]["concept_coverage"]:
        r = m.iloc[0]
        lines.append(f"coverage {r['concept_coverage']:.0%} of {len(found) + len(missed)} concepts "
                     f"(model dims: {r['concept_coverage_baseline']:.0%}); "
                     f"mean 1-latent probe {r['probe_k1']:.3f} vs {r['probe_k1_baseline']:.3f} on 1 model dim")
    lines.append(f"found (F1 >= {COVERAGE_F1}): {', '.join(found) or 'none'}")
    lines.append(f"missed: {', '.join(missed) or 'none'}")
    return "\n".join(lines)
