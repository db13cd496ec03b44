"""The edit itself: the SAE splice with chosen features changed, applied inside the model's forward.

At every edited position the hooked activation x is replaced by

    x' = x̂(f') + (x − x̂(f)) = x + Σ_j (f'_j − f_j) · W_dec[j] / input_scale

f = the SAE's latents of the clean x (TopK selection made once, on x: the edited state is never
re-encoded), f' = f with the edits applied, x − x̂(f) the SAE's error term. The right-hand form is
what runs: features that are not edited contribute exactly 0, so the untouched splice returns x
bit for bit (``tests/engine/interventions`` check this, and that both forms agree).

Edited positions are the ones the SAE was trained on (``keep``: special tokens such as [CLS] and
[SEP] stay clean), as in ``engine.evaluation.splice``, whose ``site_editor`` this reuses.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from engine.collection.hooks import replace_output
from engine.evaluation.splice import site_editor
from engine.interventions.spec import Edit
from engine.training.sae import SparseAutoencoder


@dataclass
class EditTrace:
    """What the edited features did at the edited positions of the last forward passes."""

    positions: int = 0  # edited positions seen
    fired: dict[int, int] = field(default_factory=dict)  # feature -> positions where f_j > 0 (clean)
    max_act: dict[int, float] = field(default_factory=dict)
    sum_act: dict[int, float] = field(default_factory=dict)
    keep_columns: bool = False  # also keep the clean latents of the edited features, one tensor per forward
    columns: list[torch.Tensor] = field(default_factory=list)  # [edited positions, len(edits)] each

    def summary(self) -> dict[int, dict[str, float]]:
        return {j: {"fired_positions": self.fired.get(j, 0), "max_act": self.max_act.get(j, 0.0),
                    "mean_act_when_fired": (self.sum_act.get(j, 0.0) / self.fired[j]) if self.fired.get(j) else None}
                for j in self.fired}


def latent_columns(sae: SparseAutoencoder, x: torch.Tensor, features: list[int]) -> torch.Tensor:
    """The clean latents f[:, features] of activations x [n, d] (SAE selection on x itself)."""
    code = sae.encode_sparse(x)
    out = torch.zeros(x.shape[0], len(features), dtype=code.vals.dtype, device=x.device)
    if not features:
        return out
    idx = torch.tensor(features, dtype=code.cols.dtype, device=x.device)
    hit = code.cols.unsqueeze(1) == idx.unsqueeze(0)  # [nnz, len(features)]
    r, c = hit.nonzero(as_tuple=True)
    out[code.rows[r], c] = code.vals[r]
    return out


def edit_delta(sae: SparseAutoencoder, x: torch.Tensor, edits: list[Edit], trace: EditTrace | None = None) -> torch.Tensor:
    """Σ_j (f'_j − f_j) · W_dec[j] / input_scale for activations x [n, d] (float32)."""
    if not edits:
        if trace is not None:
            trace.positions += x.shape[0]
        return torch.zeros_like(x)
    feats = [e.feature for e in edits]
    f = latent_columns(sae, x, feats)  # [n, m]
    new = f.clone()
    for i, e in enumerate(edits):
        if e.op == "zero":
            new[:, i] = 0.0
        elif e.op == "scale":
            new[:, i] = f[:, i] * float(e.value)
        else:
            new[:, i] = float(e.value)
    if trace is not None:
        trace.positions += x.shape[0]
        if trace.keep_columns:
            trace.columns.append(f.detach().clone())
        for i, j in enumerate(feats):
            col = f[:, i]
            on = col > 0
            trace.fired[j] = trace.fired.get(j, 0) + int(on.sum())
            trace.max_act[j] = max(trace.max_act.get(j, 0.0), float(col.max()) if len(col) else 0.0)
            trace.sum_act[j] = trace.sum_act.get(j, 0.0) + float(col[on].sum())
    W = sae.W_dec[feats]  # [m, d]
    return ((new - f) @ W) / sae.input_scale


def apply_edits(sae: SparseAutoencoder, x: torch.Tensor, edits: list[Edit], trace: EditTrace | None = None) -> torch.Tensor:
    """x' = x + delta: the edited activations (unchanged rows are x exactly)."""
    return x + edit_delta(sae, x, edits, trace)


def spliced_reference(sae: SparseAutoencoder, x: torch.Tensor, edits: list[Edit]) -> torch.Tensor:
    """The literal splice x̂(f') + (x − x̂(f)) with dense latents (tests compare it with apply_edits)."""
    f = sae.encode(x)
    f2 = f.clone()
    for e in edits:
        if e.op == "zero":
            f2[:, e.feature] = 0
        elif e.op == "scale":
            f2[:, e.feature] *= float(e.value)
        else:
            f2[:, e.feature] = float(e.value)
    return sae.decode(f2) + (x - sae.decode(f))


@contextmanager
def edited(module: torch.nn.Module, sae: SparseAutoencoder, keep: torch.Tensor, edits: list[Edit] | None,
           trace: EditTrace | None = None) -> Iterator[None]:
    """Run forwards with the edit spliced in at ``module`` on the ``keep`` positions [batch, len].

    ``edits=None`` means a clean forward (no hook at all). The hook acts only on forwards of the
    thread that installed it: the app serves several sessions from threads of one process, and a
    forward hook is global to the module."""
    if edits is None:
        yield
        return
    owner = threading.get_ident()
    inner = site_editor(sae, keep, lambda a: apply_edits(sae, a, edits, trace))

    def fn(out: torch.Tensor) -> torch.Tensor:
        return inner(out) if threading.get_ident() == owner else out

    with replace_output(module, fn):
        yield
