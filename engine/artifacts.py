"""Loading a run's files: the one place every command that opens a trained run goes through.

A run's folder holds ``config.json`` (the resolved configuration it ran with) and ``sae/`` (SAELens
layout: ``cfg.json`` + ``sae_weights.safetensors``). Any of them can be missing (a folder deleted by
hand), truncated (a full disk, a copy cut short) or mismatched (a ``cfg.json`` whose ``d_sae`` no
longer matches the weights). ``eval``, ``analyze``, ``intervene``, ``probe``, ``match``,
``ablation-specificity`` and the app all load runs through ``load_run`` (or its two halves), so each
of those cases ends as one ``LabError`` naming the file and the fix, never a ``SafetensorError``,
``KeyError`` or shape ``RuntimeError`` from deep inside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from engine.config import ExperimentConfig
from engine.errors import LabError
from engine.lab import Lab
from engine.training.sae import SparseAutoencoder

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


def _in_database(lab: Lab, run_id: str) -> bool:
    if not lab.db.exists():
        return False
    from db import query_rows

    try:
        return bool(query_rows(lab.root, "SELECT 1 FROM runs WHERE run_id = ?", [run_id]))
    except LabError:
        return False


def _missing(lab: Lab, run_id: str, what: str) -> LabError:
    """A file that is not there: a run the database knows lost its files; otherwise the id is wrong."""
    if _in_database(lab, run_id):
        return damaged(run_id, f"{what} is missing (the database knows the run, its folder {lab.run_dir(run_id)} does not hold it)")
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
        raise damaged(run_id, f"{path} is not readable JSON ({_first_line(e)})") from None
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
        from engine.device import pick_device

        device = pick_device(config.device)
    return LoadedRun(run_id, resolved, config, load_run_sae(lab, run_id, device) if sae else None)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
