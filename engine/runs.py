"""A run: one SAE trained on one domain and evaluated on every domain of its experiment.

``prepare_run``, training, ``complete_run`` (``engine.pipeline`` drives them) are plain functions of
the spec that return its results; they never touch the database.
The local recorder (``engine.recording``) and the sweep worker wrap them; a
distributed executor could run it on another machine and ship the outcome back. Opening what a run
needs or saved (activation stores, its SAE, its resolved config) is ``engine.artifacts``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from core.config_base import ConfigBase
from core.errors import writing_to
from core.lab import Lab, code_version
from engine.artifacts import check_against_model, collect_for
from engine.collection.models import ModelInfo, load_model, resolve_model
from engine.collection.store import ActivationStore
from engine.config import ExperimentConfig
from engine.device import pick_device
from engine.evaluation.metrics import evaluate_reconstruction
from engine.evaluation.quality import interpretable_features, quality_score
from engine.evaluation.splice import splice_fidelity
from engine.training.data import ShuffledBatches
from engine.training.sae import SparseAutoencoder
from engine.training.trainer import Trainer, TrainHooks, TrainResult, describe_training, init_sae_from_store_stats


@dataclass
class RunSpec(ConfigBase):
    run_id: str
    group_id: str
    train_domain: str
    config: ExperimentConfig
    name: str = ""
    sweep_id: str | None = None
    tags: list[str] = field(default_factory=list)


def new_run_id() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def group_id_of(config: ExperimentConfig) -> str:
    """Runs whose configurations differ only in training domain share this id."""
    d = config.to_dict()
    d.pop("train_domains", None)
    d.pop("name", None)
    d["data"].pop("layers", None)  # what else gets collected does not change the SAE
    d["data"].pop("hooks", None)
    return "g-" + hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def plan_runs(config: ExperimentConfig, sweep_id: str | None = None, tags: list[str] | None = None) -> list[RunSpec]:
    gid = group_id_of(config)
    return [
        RunSpec(new_run_id(), gid, dom, config, name=f"{config.name}/{dom}", sweep_id=sweep_id, tags=list(tags or []))
        for dom in config.training_domains
    ]


@dataclass
class RunOutcome:
    run_id: str
    resolved: dict[str, Any]
    train: dict[str, Any]
    evals: list[dict[str, Any]]
    splices: list[dict[str, Any]]
    quality: dict[str, Any]
    sae_dir: str
    interpretable: dict[int, int] = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)  # collect, train, eval, database

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_run(spec: RunSpec, info: ModelInfo, device: torch.device, stores: dict[str, ActivationStore]) -> dict[str, Any]:
    """The full resolved configuration saved with the run."""
    return {
        "run_id": spec.run_id,
        "group_id": spec.group_id,
        "train_domain": spec.train_domain,
        "experiment": spec.config.to_dict(),
        "model": info.to_dict(),
        "device": str(device),
        "activation_sets": {name: s.key for name, s in stores.items()},
        "code_version": code_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def evaluate_sae(
    sae: SparseAutoencoder,
    config: ExperimentConfig,
    train_domain: str,
    stores: dict[str, ActivationStore],
    device: torch.device,
    splice: bool = True,
    train_steps: int | None = None,
    codes_run_id: str | None = None,
) -> tuple[list[dict], list[dict], dict, dict[int, int]]:
    """Eval rows per domain (with transfer ratios), splice rows, the quality score (with warnings when
    the SAE fails the lab's own checks; ``train_steps`` feeds the too-few-steps one). With
    ``codes_run_id`` the held-out codes stay in ``engine.evaluation.codes.CODES`` for the run's analysis."""
    evals, splices = [], []
    interp: dict[int, int] = {}
    loaded = load_model(resolve_model(config.model), device) if splice and config.eval.splice_sequences > 0 else None
    train_metrics = None
    for name, store in stores.items():
        own = name == train_domain
        acts = store.acts(config.hook, config.layer)
        keep = (codes_run_id, store.key, config.hook, config.layer) if codes_run_id else None
        m, tops = evaluate_reconstruction(sae, acts, store.val_start, store.n_rows, device,
                                          top_n=config.eval.interpretable_top_n if own else 0, keep_codes=keep)
        if own:
            train_metrics = m
            val_tokens = store.tokens()[store.rows()[store.val_start :, 0], store.rows()[store.val_start :, 1]]
            interp = interpretable_features(tops, np.asarray(val_tokens), config.eval.interpretable_token_share)
        evals.append({"eval_domain": name, **m.to_dict()})
        if loaded is not None:
            n_val = int(store.meta["n_val_sequences"])
            first = int(store.meta["n_sequences"]) - n_val
            take = min(n_val, config.eval.splice_sequences)
            tokens = np.asarray(store.tokens()[first : first + take])
            keep = np.zeros(tokens.shape, dtype=bool)
            rows = store.rows()
            sel = (rows[:, 0] >= first) & (rows[:, 0] < first + take)
            keep[rows[sel, 0] - first, rows[sel, 1]] = True
            sp = splice_fidelity(loaded, sae, config.hook, config.layer, tokens, keep)
            splices.append({"eval_domain": name, **sp.to_dict()})
    assert train_metrics is not None
    for row in evals:
        row["transfer_ratio"] = row["mse"] / train_metrics.mse if train_metrics.mse > 0 else None
    q = quality_score(train_metrics, config.sae.k, len(set(interp.values())), train_steps)
    return evals, splices, q.to_dict(), interp


@dataclass
class PreparedRun:
    """A run ready to train: its trainer (already given its SAE, batches and checkpoint path), the
    activation stores it is evaluated on, and its resolved configuration (saved as config.json)."""

    spec: RunSpec
    trainer: Trainer
    stores: dict[str, ActivationStore]
    resolved: dict[str, Any]
    device: torch.device


def share_key(spec: RunSpec) -> str:
    """Runs with equal keys train on the very same batches in the same order (same activations,
    training domain, batch size and seed), so one gather of each batch can feed all of them
    (``engine.training.group``). What only the SAE or its optimiser sees (``sae.*``, the learning
    rate, the schedule, how it is evaluated) is left out: those may differ within a group."""
    d = spec.config.to_dict()
    train = d.pop("train")
    for key in ("sae", "eval", "name", "train_domains"):
        d.pop(key, None)
    d["batch_size"] = train["batch_size"]
    d["train_domain"] = spec.train_domain
    return "share-" + hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def prepare_run(
    spec: RunSpec,
    lab: Lab,
    hooks: TrainHooks | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    device: torch.device | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> PreparedRun:
    """Collect (or reuse) activations, build the SAE and its trainer, save config.json."""
    phase = on_phase or (lambda _name: None)
    config = spec.config
    phase("collect")
    info = resolve_model(config.model)
    check_against_model(config, info)
    device = device or pick_device(config.device)
    stores = collect_for(config, lab, progress, device)
    store = stores[spec.train_domain]
    stats = store.site_stats(config.hook, config.layer)
    torch.manual_seed(config.seed)
    sae = init_sae_from_store_stats(info.d_model, config.sae, np.asarray(stats["train_mean"]),
                                    stats["train_mean_sq_norm"], config.seed)
    batches = ShuffledBatches(store.acts(config.hook, config.layer), 0, store.val_start, config.train.batch_size, config.seed)
    run_dir = lab.run_dir(spec.run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(sae, config.sae, config.train, batches, device, config.seed, run_dir / "checkpoint.pt", hooks, progress)
    resolved = resolve_run(spec, info, device, stores)
    resolved["training"] = describe_training(trainer)
    with writing_to(run_dir / "config.json"):
        (run_dir / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True))
    if on_start:
        on_start(resolved)
    return PreparedRun(spec, trainer, stores, resolved, device)


def complete_run(run: PreparedRun, lab: Lab, result: TrainResult, evaluate: bool = True,
                 on_phase: Callable[[str], None] | None = None) -> RunOutcome:
    """Save the trained SAE, evaluate it on every domain, drop the checkpoint."""
    spec, config, sae = run.spec, run.spec.config, run.trainer.sae
    run_dir = lab.run_dir(spec.run_id)
    sae_dir = run_dir / "sae"
    sae.save(sae_dir, {
        "model_name": config.model,
        "hook_name": f"{config.hook}@{config.layer}",
        "hook_layer": config.layer,
        "context_size": config.data.seq_len,
        "dataset_path": spec.train_domain,
        "run_id": spec.run_id,
        "lab_input_scale": float(sae.input_scale),
    })
    if evaluate and on_phase:
        on_phase("eval")
    evals, splices, quality, interp = (evaluate_sae(sae, config, spec.train_domain, run.stores, run.device,
                                                    train_steps=run.trainer.total_steps, codes_run_id=spec.run_id)
                                       if evaluate else ([], [], {}, {}))
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return RunOutcome(spec.run_id, run.resolved, asdict(result), evals, splices, quality, lab.relative(sae_dir), interp)
