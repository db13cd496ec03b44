"""Which format a folder holds, from its file names alone, and the reader that reads it.

Why by file names: each project writes a fixed pair of files (SAELens ``cfg.json`` +
``sae_weights.safetensors``, sparsify ``cfg.json`` + ``sae.safetensors`` per hookpoint sub-folder,
dictionary_learning ``ae.pt`` + ``config.json``), so the pair tells the format before anything is
opened, and a folder that holds none of them is refused with a line saying what was expected. A sparsify
run folder holds one sub-folder per hookpoint: the one whose name maps to ``--hook``/``--layer`` is
taken, or the only one; several without a choice are listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.errors import LabError
from engine.imports import dictionary_learning, hook_names, saelens, sparsify
from engine.imports.source import SourceSAE

EXPECTED = ("SAELens (cfg.json + sae_weights.safetensors), sparsify (cfg.json + sae.safetensors, or one such sub-folder per "
            "hookpoint) or dictionary_learning (ae.pt + config.json)")


@dataclass
class Found:
    format: str  # saelens | sparsify | dictionary_learning
    folder: Path
    hookpoints: list[Path] = field(default_factory=list)  # a sparsify run folder's sub-folders


def recognise(path: str | Path) -> Found:
    p = Path(path).expanduser()
    if not p.exists():
        raise LabError(f"'{path}' does not exist: give the folder the SAE was saved in")
    folder = p if p.is_dir() else p.parent  # a file of the pair stands for its folder
    names = {f.name for f in folder.iterdir() if f.is_file()}
    if saelens.WEIGHTS in names:
        return Found("saelens", folder)
    if sparsify.WEIGHTS in names:
        return Found("sparsify", folder)
    if dictionary_learning.WEIGHTS in names:
        return Found("dictionary_learning", folder)
    points = sparsify.hookpoints(folder)
    if points:
        return Found("sparsify", folder, points)
    if names & {"cfg.json", "config.json"}:
        raise LabError(f"{folder} has a config but no weights file next to it: expected {EXPECTED}; copy the weights too")
    raise LabError(f"{folder} holds no SAE weights: expected {EXPECTED}")


def select_hookpoint(found: Found, hook: str | None, layer: int | None, model_type: str) -> Path:
    """The sparsify hookpoint folder to import from a run folder."""
    if not found.hookpoints:
        return found.folder
    if len(found.hookpoints) == 1 and hook is None and layer is None:
        return found.hookpoints[0]
    if hook is not None or layer is not None:
        matches = []
        for p in found.hookpoints:
            try:
                h, layer_of, _ = hook_names.from_name(p.name, model_type)
            except LabError:
                continue
            if (hook is None or h == hook) and (layer is None or layer_of == layer):
                matches.append(p)
        if len(matches) == 1:
            return matches[0]
    listed = ", ".join(p.name for p in found.hookpoints)
    raise LabError(f"{found.folder} holds sparse coders for {len(found.hookpoints)} hookpoints ({listed}): point at one "
                   "of those sub-folders, or choose with --hook and --layer")


def read_found(found: Found, folder: Path, norm_scaling_factor: float | None = None) -> SourceSAE:
    if found.format == "saelens":
        return saelens.read(folder, norm_scaling_factor)
    if found.format == "sparsify":
        return sparsify.read(folder)
    return dictionary_learning.read(folder)
