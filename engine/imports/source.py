"""What every reader returns: an SAE from elsewhere in the lab's terms, plus where it came from.

The tensors are in SAELens's layout on raw activations (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec
[d_sae, d_in]``, ``b_dec``, and a ``threshold [d_sae]`` for JumpReLU and BatchTopK), with ``b_dec``
subtracted before encoding: exactly what ``SparseAutoencoder`` computes. A reader that had to change
anything to get there (fold a normalisation factor, fold ``b_dec`` into ``b_enc`` for a source that
does not subtract it, fold decoder norms) says so in ``notes``; the notes and the original config,
verbatim, are stored with the run. ``check`` holds the tests every format shares (shapes agree with
d_in and d_sae, every value finite, k possible), so a reader only knows its own file layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.errors import LabError
from engine.imports.weights import check_finite
from engine.training import architectures


@dataclass
class SourceSAE:
    format: str  # saelens | sparsify | dictionary_learning | saelens-release
    path: str  # the folder (absolute), or "release/sae_id"
    weights_file: str  # the weights file's name inside the folder
    sha256: str  # of the weights file's bytes
    config_text: str  # the source's config file, verbatim
    architecture: str  # the lab architecture that computes the same encoding
    source_architecture: str  # as the source names it
    d_in: int
    d_sae: int
    tensors: dict[str, torch.Tensor]
    k: int | None = None  # the source's own k (TopK, BatchTopK) or target L0; None: measured on import
    hook_name: str | None = None  # as the source writes it; None when it says nothing
    layer_hint: int | None = None  # a layer the source states apart from its hook name (dictionary_learning's "layer")
    model_name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # lab architecture options (matryoshka prefixes)
    notes: list[str] = field(default_factory=list)

    @property
    def folder_name(self) -> str:
        return Path(self.path).name or self.path

    def check(self) -> "SourceSAE":
        """Shapes, values and k, the same for every format; a one-line LabError naming the file."""
        where = f"{self.path}/{self.weights_file}"
        check_shapes(where, self.tensors, self.d_in, self.d_sae)
        check_finite(Path(self.path) / self.weights_file, self.tensors)
        if self.k is not None and not 0 < self.k <= self.d_sae:
            raise LabError(f"{where}: k = {self.k} must be between 1 and d_sae = {self.d_sae}: the config is damaged")
        # the lab architecture's own checks (e.g. Matryoshka prefixes that do not fit d_sae), before any import
        architectures.get(self.architecture)(self.d_in, self.d_sae, self.k or 1, self.options or None)
        return self

    def to_sae(self, k: int):
        """The lab's ``SparseAutoencoder`` with these weights (on the CPU, in eval mode)."""
        # deferred: engine.training.sae pulls in the trainer's sparse ops; a preview never needs it
        from engine.training.sae import SparseAutoencoder

        sae = SparseAutoencoder(self.d_in, self.d_sae, self.architecture, k, self.options or None)
        with torch.no_grad():
            sae.W_enc_rows.copy_(self.tensors["W_enc"].t())
            for name in ("b_enc", "W_dec", "b_dec"):
                getattr(sae, name).copy_(self.tensors[name])
            sae.arch.load_tensors(sae, {n: t for n, t in self.tensors.items() if n == "threshold"})
        return sae.eval()


def check_shapes(where: str | Path, tensors: dict[str, torch.Tensor], d_in: int, d_sae: int) -> None:
    """The four SAELens tensors (and a threshold, when there is one) have the shapes d_in and d_sae say."""
    if not (d_in > 0 and d_sae > 0):
        raise LabError(f"{where}: d_in = {d_in}, d_sae = {d_sae} must be positive: the config does not describe this SAE")
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if "threshold" in tensors:
        expected["threshold"] = (d_sae,)
    for name, shape in expected.items():
        t = tensors.get(name)
        got = None if t is None else tuple(t.shape)
        if got != shape:
            held = f"no {name}" if got is None else f"{name} of shape {list(got)}"
            raise LabError(f"{where} holds {held}, expected {list(shape)} for d_in = {d_in}, d_sae = {d_sae}: "
                           "the config and the weights do not belong together")


def fold_b_dec_into_b_enc(tensors: dict[str, torch.Tensor]) -> None:
    """For a source whose encoder reads x, not x − b_dec: (x − b_dec) W + (b_enc + b_dec W) = x W + b_enc.
    Computed in float64 so the fold adds no more than float32 rounding."""
    tensors["b_enc"] = (tensors["b_enc"].double() + tensors["b_dec"].double() @ tensors["W_enc"].double()).float()


def fold_scale(tensors: dict[str, torch.Tensor], s: float) -> None:
    """A source that multiplied activations by s before encoding and divided its output by s: the weights
    that do the same on raw activations (SAELens's fold_activation_norm_scaling_factor)."""
    tensors["W_enc"] = tensors["W_enc"] * s
    tensors["W_dec"] = tensors["W_dec"] / s
    tensors["b_dec"] = tensors["b_dec"] / s


def fold_decoder_norms(tensors: dict[str, torch.Tensor]) -> None:
    """SAELens's ``rescale_acts_by_decoder_norm``: latents are the pre-activations times each decoder row's
    norm, decoded through unit rows. Folding the norms into the encoder (and threshold) computes the same."""
    n = tensors["W_dec"].norm(dim=1).clamp_min(1e-8)
    tensors["W_enc"] = tensors["W_enc"] * n
    tensors["b_enc"] = tensors["b_enc"] * n
    tensors["W_dec"] = tensors["W_dec"] / n[:, None]
    if "threshold" in tensors:
        tensors["threshold"] = tensors["threshold"] * n


def uniform_threshold(t: torch.Tensor) -> bool:
    """One threshold for every latent: BatchTopK's global threshold as SAELens and dictionary_learning save it."""
    return bool(t.numel()) and bool((t == t.flatten()[0]).all())
