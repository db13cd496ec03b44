"""A run's inputs and outputs on disk, apart from the conductor (``engine.runs.prepare_run`` / ``complete_run``).

The activation stores a configuration needs (checked against the model and the machine first,
collected once and reused after), the stores a finished run was trained on (by the keys saved with
it), and the files it saved: ``config.json`` (the resolved configuration it ran with) and ``sae/``
(SAELens layout: ``cfg.json`` + ``sae_weights.safetensors``). Analysis, probes, matching and
interventions open runs through here without importing the training and evaluation the conductor
drives.

Any of a run's files can be missing (a folder deleted by hand), truncated (a full disk, a copy cut
short) or mismatched (a ``cfg.json`` whose ``d_sae`` no longer matches the weights). ``eval``,
``analyze``, ``intervene``, ``probe``, ``match``, ``ablation-specificity`` and the app all load runs
through ``load_run`` (or its two halves), so each of those cases ends as one ``LabError`` naming the
file and the fix, never a ``SafetensorError``, ``KeyError`` or shape ``RuntimeError`` from deep inside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psutil
import torch

from core.errors import LabError, first_line
from core.lab import Lab
from db import query_rows
from engine.collection.collect import Site, collect_domains
from engine.collection.models import ModelInfo, resolve_model
from engine.collection.store import ActivationStore
from engine.config import ExperimentConfig
from engine.device import pick_device
from engine.training.sae import SparseAutoencoder


def check_against_model(config: ExperimentConfig, info: ModelInfo) -> None:
    """Checks that need the model's config (but not its weights)."""
    if not 0 <= config.layer < info.n_layers:
        raise LabError(f"layer {config.layer} is out of range: model '{info.name}' has layers 0 to {info.n_layers - 1}")
    for layer in config.data_layers(info.n_layers):
        if not 0 <= layer < info.n_layers:
            raise LabError(f"collect layer {layer} is out of range: model '{info.name}' has layers 0 to {info.n_layers - 1}")
    if config.data.seq_len > info.max_positions:
        raise LabError(f"seq_len = {config.data.seq_len} exceeds the model's context of {info.max_positions}: lower --seq-len")
    if config.train.aux_k is not None and config.train.aux_k > config.sae.d_sae:
        raise LabError(f"aux_k = {config.train.aux_k} is larger than d_sae = {config.sae.d_sae}: omit it for d_in / 2")
    need, have = training_memory_bytes(config, info.d_model), _total_memory_bytes()
    if have and need > have:
        raise LabError(
            f"d_sae = {config.sae.d_sae} with train.batch_size = {config.train.batch_size} needs about {need / 2**30:.0f} GiB "
            f"to train on model '{info.name}' (width {info.d_model}), more than this machine's {have / 2**30:.0f} GiB: "
            "lower d_sae or the batch size"
        )


def training_memory_bytes(config: ExperimentConfig, d_in: int) -> int:
    """A lower estimate of what training holds at once: the encoder and decoder (d_sae x d_in float32
    each) with their gradients and Adam's two moments, plus one batch of latent pre-activations and
    its gradient. A config above the machine's RAM can only end in an allocation failure (or the OOM
    killer) after its run row exists, so it is refused while nothing is written."""
    weights = 2 * config.sae.d_sae * d_in * 4 * 4
    latents = config.train.batch_size * config.sae.d_sae * 4 * 2
    return weights + latents


def _total_memory_bytes() -> int:
    try:
        return int(psutil.virtual_memory().total)
    except Exception:  # no psutil or no /proc: skip the check rather than guess
        return 0


def collection_sites(config: ExperimentConfig, info: ModelInfo) -> list[Site]:
    layers = sorted(set(config.data_layers(info.n_layers)) | {config.layer})
    hooks = sorted(set(config.data.hooks or []) | {config.hook})
    return [(h, layer) for h in hooks for layer in layers]


def collect_for(config: ExperimentConfig, lab: Lab, progress: bool = False,
                device: torch.device | None = None) -> dict[str, ActivationStore]:
    """Activation stores for every domain of the config (collected once, all or nothing, reused after)."""
    info = resolve_model(config.model)
    check_against_model(config, info)
    device = device or pick_device(config.device)
    return collect_domains(lab, info, device, config.data.domains, config.data, config.seed,
                           collection_sites(config, info), progress)


def stores_for_run(lab: Lab, resolved: dict[str, Any], config: ExperimentConfig) -> tuple[dict[str, ActivationStore], list[str]]:
    """The activation sets the run was trained and evaluated on, by the keys saved with it.

    Opening them by key (not by re-deriving the key from the config) keeps an analysis on the very
    text the SAE saw even after the lab's corpus or collection code changed; only when a set is gone
    is it collected again from the config, with a note saying so."""
    keys = resolved.get("activation_sets") or {}
    out: dict[str, ActivationStore] = {}
    notes: list[str] = []
    for name in config.domain_names:
        path = lab.activations / keys.get(name, "")
        if keys.get(name) and (path / "meta.json").exists():
            store = ActivationStore.open(path)
            if store.has(config.hook, config.layer):
                out[name] = store
    missing = [n for n in config.domain_names if n not in out]
    if missing:
        fresh = collect_for(config, lab)
        for n in missing:
            out[n] = fresh[n]
        notes.append(f"activation sets of {', '.join(missing)} were collected again from the config (the run's own were gone)")
    return {n: out[n] for n in config.domain_names}, notes


LIST_RUNS = 'list runs with python -m engine sql "select run_id from runs"'


@dataclass
class LoadedRun:
    run_id: str
    resolved: dict[str, Any]
    config: ExperimentConfig
    sae: SparseAutoencoder | None


def damaged(run_id: str, detail: str) -> LabError:
    return LabError(f"run '{run_id}' cannot be loaded: {detail}; retrain it (python -m engine train with its settings) "
                    f"or delete it (python -m engine runs delete {run_id})")


def run_row_exists(lab: Lab, run_id: str) -> bool:
    """Whether the lab's database has a row for the run (False when there is no database yet)."""
    if not lab.db.exists():
        return False
    try:
        return bool(query_rows(lab, "SELECT 1 FROM runs WHERE run_id = ?", [run_id]))
    except LabError:
        return False


def _missing(lab: Lab, run_id: str, what: str) -> LabError:
    """A file that is not there: a run the database knows lost its files; otherwise the id is wrong."""
    if run_row_exists(lab, run_id):
        return damaged(run_id, f"{what} is missing (the database knows the run, its folder {lab.run_dir(run_id)} does not hold "
                               "it)")
    return LabError(f"unknown run '{run_id}': no {what}; {LIST_RUNS}")


def _check_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not run_id or "/" in run_id or "\\" in run_id or run_id in (".", ".."):
        raise LabError(f"unknown run '{run_id}': not a run id; {LIST_RUNS}")


def load_run_config(lab: Lab, run_id: str) -> dict[str, Any]:
    """The resolved configuration saved with the run (``config.json``)."""
    _check_id(run_id)
    path = lab.run_dir(run_id) / "config.json"
    if not path.exists():
        raise _missing(lab, run_id, str(path))
    try:
        resolved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(run_id, f"{path} is not readable JSON ({first_line(e)})") from None
    if not isinstance(resolved, dict) or not isinstance(resolved.get("experiment"), dict):
        raise damaged(run_id, f"{path} has no 'experiment' settings")
    return resolved


def run_config(run_id: str, resolved: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.from_dict(resolved["experiment"], "config")
    except LabError as e:
        raise damaged(run_id, f"the settings in its config.json do not load ({e})") from None


def load_run_sae(lab: Lab, run_id: str, device: torch.device | str = "cpu") -> SparseAutoencoder:
    """The run's trained SAE (``sae/``), checked against its own ``cfg.json``."""
    _check_id(run_id)
    folder = lab.run_dir(run_id) / "sae"
    if not lab.run_dir(run_id).exists():
        raise _missing(lab, run_id, str(folder / "cfg.json"))
    if not (folder / "cfg.json").exists():
        raise damaged(run_id, f"it has no saved SAE in {folder} (training did not finish, or the folder was removed)")
    try:
        return SparseAutoencoder.load(folder, device)
    except LabError as e:
        raise damaged(run_id, str(e)) from None


def load_run(lab: Lab, run_id: str, device: torch.device | str | None = None, sae: bool = True) -> LoadedRun:
    """Configuration, parsed settings and (with ``sae``) the SAE of a run: everything or one LabError."""
    resolved = load_run_config(lab, run_id)
    config = run_config(run_id, resolved)
    if device is None:
        device = pick_device(config.device)
    return LoadedRun(run_id, resolved, config, load_run_sae(lab, run_id, device) if sae else None)
