"""A run's inputs and outputs on disk, apart from the conductor (``engine.runs.execute_run``).

The activation stores a configuration needs (checked against the model first, collected once
and reused after), the stores a finished run was trained on (by the keys saved with it), and the
SAE and resolved configuration it saved. Analysis, probes, matching and interventions open runs
through here without importing the training and evaluation the conductor drives.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from core.errors import LabError
from core.lab import Lab
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


def collection_sites(config: ExperimentConfig, info: ModelInfo) -> list[Site]:
    layers = sorted(set(config.data_layers(info.n_layers)) | {config.layer})
    hooks = sorted(set(config.data.hooks or []) | {config.hook})
    return [(h, layer) for h in hooks for layer in layers]


def collect_for(config: ExperimentConfig, lab: Lab, progress: bool = False, device: torch.device | None = None) -> dict[str, ActivationStore]:
    """Activation stores for every domain of the config (collected once, all or nothing, reused after)."""
    info = resolve_model(config.model)
    check_against_model(config, info)
    device = device or pick_device(config.device)
    return collect_domains(lab, info, device, config.data.domains, config.data, config.seed, collection_sites(config, info), progress)


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


def load_run_sae(lab: Lab, run_id: str, device: torch.device | str = "cpu") -> SparseAutoencoder:
    folder = lab.run_dir(run_id) / "sae"
    if not (folder / "cfg.json").exists():
        raise LabError(f"run '{run_id}' has no saved SAE in {folder}: check the run id (python -m engine sql \"select run_id from runs\")")
    return SparseAutoencoder.load(folder, device)


def load_run_config(lab: Lab, run_id: str) -> dict[str, Any]:
    path = lab.run_dir(run_id) / "config.json"
    if not path.exists():
        raise LabError(f"unknown run '{run_id}': no {path}; list runs with python -m engine sql \"select run_id from runs\"")
    return json.loads(path.read_text())
