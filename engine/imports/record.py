"""What an import writes, once its evaluation is done: the run's folder and, in one transaction, its rows.

The same files and rows a trained run has (``engine.runs`` / ``engine.recording``): ``config.json`` (the
resolved configuration, here with an ``import`` section instead of ``training``), ``sae/`` in
SAELens's layout, and ``runs`` (FINISHED, owned by this process like any run), ``eval_results``,
``splice_results``, ``quality_scores``, ``artifacts``; plus ``run_imports`` (provenance) and the
``activation_sets`` the evaluation read. Nothing here decides anything: ``conduct`` does.
"""

from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

import torch

from core.errors import writing_to
from core.lab import Lab, code_version
from db import Op, utcnow
from engine.collection.models import ModelInfo
from engine.config import ExperimentConfig
from engine.imports.source import SourceSAE
from engine.recording import EVAL_COLUMNS, SPLICE_COLUMNS
from engine.run_owner import Owner


def group_id(sha256: str, model: str, hook: str, layer: int) -> str:
    """One group per file, model and hook point (a group is the runs one transfer matrix shows)."""
    return "imp-" + hashlib.sha256(f"{sha256}|{model}|{hook}|{layer}".encode()).hexdigest()[:12]


def write_files(lab: Lab, run_id: str, s: SourceSAE, info: ModelInfo, config: ExperimentConfig, sae, stores: dict, device,
                notes: list[str]) -> dict[str, Any]:
    """The run's folder; returns its resolved configuration."""
    run_dir = lab.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=False)
    resolved = {
        "run_id": run_id, "group_id": group_id(s.sha256, config.model, config.hook, config.layer),
        "train_domain": config.domain_names[0], "experiment": config.to_dict(), "model": info.to_dict(),
        "device": str(device), "activation_sets": {n: st.key for n, st in stores.items()}, "code_version": code_version(),
        "torch": torch.__version__, "python": platform.python_version(),
        "import": {"format": s.format, "path": s.path, "weights_file": s.weights_file, "weights_sha256": s.sha256,
                   "source_architecture": s.source_architecture, "source_hook": s.hook_name, "source_model": s.model_name,
                   "notes": notes},
    }
    sae.cpu().save(run_dir / "sae", {  # atomic, and a full disk is one DiskFullError
        "model_name": config.model, "hook_name": f"{config.hook}@{config.layer}", "hook_layer": config.layer,
        "context_size": config.data.seq_len, "dataset_path": f"imported ({s.format})", "run_id": run_id,
        "lab_input_scale": 1.0, "imported_from": s.path,
    })
    with writing_to(run_dir / "config.json"):
        (run_dir / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True))
    return resolved


def _insert(table: str, row: dict[str, Any], on_conflict: str = "replace") -> Op:
    return Op("insert", table, list(row), [list(row.values())], on_conflict=on_conflict)  # type: ignore[arg-type]


def rows(lab: Lab, run_id: str, s: SourceSAE, config: ExperimentConfig, resolved: dict, evals: list[dict],
         splices: list[dict], quality: dict, notes: list[str], tags: list[str] | None) -> list[Op]:
    """Every row of the imported run, for one transaction."""
    now = utcnow()
    reference = resolved["train_domain"]
    run = {
        "run_id": run_id, "group_id": resolved["group_id"], "name": config.name, "status": "FINISHED",
        "created_at": now, "started_at": now, "ended_at": now, "heartbeat_at": now, "model": config.model,
        "hook": config.hook, "layer": config.layer, "architecture": s.architecture, "d_in": s.d_in, "d_sae": s.d_sae,
        "k": config.sae.k, "train_domain": reference, "domains": config.domain_names, "seed": config.seed,
        "tokens_per_domain": config.data.tokens_per_domain, "config": json.dumps(resolved, sort_keys=True),
        "code_version": resolved["code_version"], "device": resolved["device"],
        "artifact_dir": lab.relative(lab.run_dir(run_id)), "tags": sorted({"imported", s.format, *(tags or [])}),
        "sweep_id": None, **Owner.current().columns(),
    }
    ops = [_insert("runs", run, "error")]
    for e in evals:
        ops.append(_insert("eval_results", {"run_id": run_id, "eval_domain": e["eval_domain"], "train_domain": reference,
                                            **{c: e.get(c) for c in EVAL_COLUMNS}, "evaluated_at": now}))
    for sp in splices:
        ops.append(_insert("splice_results", {"run_id": run_id, "eval_domain": sp["eval_domain"],
                                              **{c: sp.get(c) for c in SPLICE_COLUMNS}, "evaluated_at": now}))
    if quality:
        points = ("reconstruction_points", "sparsity_points", "interpretability_points", "score", "rating")
        ops.append(_insert("quality_scores", {"run_id": run_id, **{k: quality[k] for k in points},
                                              "details": json.dumps(quality["details"]), "scored_at": now}))
    sae_dir = lab.run_dir(run_id) / "sae"
    ops.append(_insert("artifacts", {"run_id": run_id, "name": "sae", "kind": "saelens", "path": lab.relative(sae_dir),
                                     "bytes": sum(f.stat().st_size for f in sae_dir.iterdir()), "created_at": now}))
    ops.append(_insert("run_imports", {
        "run_id": run_id, "source_format": s.format, "source_path": s.path, "weights_file": s.weights_file,
        "weights_sha256": s.sha256, "source_architecture": s.source_architecture, "source_hook": s.hook_name,
        "source_model": s.model_name, "original_config": s.config_text,
        "conversion": json.dumps({"notes": notes, "k": config.sae.k}), "imported_at": now}, "error"))
    return ops


def activation_set_rows(lab: Lab, stores: dict) -> list[Op]:
    """The activation sets the import read (collected now or before), as ``engine.pipeline.collect`` records them."""
    ops = []
    for store in stores.values():
        m = store.meta
        ops.append(_insert("activation_sets", {
            "key": m["key"], "model": m["model"], "domain": m["domain"], "source": m["source"], "n_tokens": m["n_rows"],
            "n_sequences": m["n_sequences"], "seq_len": m["seq_len"], "seed": m["seed"], "hooks": sorted(m["sites"]),
            "path": lab.relative(store.path), "created_at": utcnow()}))
    return ops
