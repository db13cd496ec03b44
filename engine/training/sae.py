"""The sparse autoencoder module in SAELens's tensor layout; what is architecture-specific lives in
``engine.training.architectures`` (one module per architecture, found through its registry).

Saved tensors follow SAELens: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
``b_dec [d_in]`` plus whatever the architecture adds (a JumpReLU ``threshold``); encoding subtracts
``b_dec`` first. In memory the encoder is kept as rows
(``W_enc_rows = W_enc.T``, one row per latent) because its sparse gradient comes out in that layout;
``W_enc`` is a view of it. Inputs are multiplied by ``input_scale``
(chosen so training inputs have mean squared norm d_in) and outputs divided by it; the scale is
folded into the weights when the SAE is saved, so a saved SAE works on raw activations. Pre-activations
are unchanged by the fold, so thresholds need no rescaling.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from core.errors import LabError, first_line, writing_to
from engine.training import architectures
from engine.training.sparse_ops import row_offsets


@dataclass
class SparseCode:
    """Active latents as sorted (row, col, value) triplets; ``batch`` rows in all."""

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    batch: int

    def dense(self, d_sae: int) -> torch.Tensor:
        out = torch.zeros(self.batch, d_sae, dtype=self.vals.dtype, device=self.vals.device)
        out[self.rows, self.cols] = self.vals
        return out


class SparseAutoencoder(nn.Module):
    def __init__(self, d_in: int, d_sae: int, architecture: str = "topk", k: int = 16, options: dict[str, Any] | None = None):
        super().__init__()
        if not 0 < k <= d_sae:
            raise LabError(f"k = {k} must be between 1 and d_sae = {d_sae}")
        self.arch = architectures.get(architecture)(d_in, d_sae, k, options)
        self.d_in, self.d_sae, self.architecture, self.k = d_in, d_sae, architecture, k
        self.W_enc_rows = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_scale", torch.ones(()))
        self.arch.build(self)

    @property
    def W_enc(self) -> torch.Tensor:
        """SAELens layout [d_in, d_sae] (a view)."""
        return self.W_enc_rows.t()

    # -- initialisation ---------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator, data_mean: torch.Tensor | None = None, scale: float = 1.0) -> None:
        """Unit-norm random decoder rows, encoder = decoder transpose, b_dec at the (scaled) data mean."""
        w = torch.randn(self.d_sae, self.d_in, generator=generator)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        self.W_enc_rows.copy_(w)  # encoder = decoder transpose
        self.b_enc.zero_()
        self.input_scale.fill_(scale)
        if data_mean is not None:
            self.b_dec.copy_(data_mean.to(self.b_dec.dtype) * scale)

    # -- inference (raw activations in, raw activations out) ---------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.to(self.W_dec.dtype) * self.input_scale
        return torch.addmm(self.b_enc, xs - self.b_dec, self.W_enc_rows.t())

    def encode_sparse(self, x: torch.Tensor) -> SparseCode:
        rows, cols, vals = self.arch.encode(self, self.pre_acts(x))
        return SparseCode(rows, cols, vals, x.shape[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latent activations [batch, d_sae] (in the scaled space the latents live in)."""
        return self.encode_sparse(x).dense(self.d_sae)

    def decode_sparse(self, code: SparseCode) -> torch.Tensor:
        offsets = row_offsets(code.rows, code.batch)
        out = F.embedding_bag(code.cols, self.W_dec, offsets[:-1], mode="sum", per_sample_weights=code.vals)
        return (out + self.b_dec) / self.input_scale

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return (f @ self.W_dec + self.b_dec) / self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_sparse(self.encode_sparse(x))

    # -- persistence: SAELens layout ----------------------------------------------------------------
    @torch.no_grad()
    def folded_tensors(self) -> dict[str, torch.Tensor]:
        """Weights with input_scale folded in, so they act on raw activations (SAELens convention)."""
        s = float(self.input_scale)
        out = {
            "W_enc": (self.W_enc_rows.t() * s).float().contiguous(),
            "b_enc": self.b_enc.float().contiguous(),
            "W_dec": (self.W_dec / s).float().contiguous(),
            "b_dec": (self.b_dec / s).float().contiguous(),
        }
        out.update({name: t.float().contiguous() for name, t in self.arch.saelens_tensors(self).items()})
        return out

    def saelens_cfg(self, metadata: dict[str, Any]) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "reshape_activations": "none",
            "architecture": self.arch.saelens_architecture,
            "metadata": {**self.arch.saelens_metadata(), **metadata},
        }
        cfg.update(self.arch.saelens_cfg(self))
        return cfg

    def save(self, folder: Path, metadata: dict[str, Any]) -> None:
        """Write ``cfg.json`` + ``sae_weights.safetensors`` (SAELens's on-disk layout) atomically."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            with writing_to(tmp):  # a full disk: one DiskFullError, not safetensors' serializing error
                save_file(self.folded_tensors(), str(tmp / "sae_weights.safetensors"))
                lab_meta = {**metadata, "lab_architecture": self.architecture, "k": self.k, "lab_options": self.arch.options}
                (tmp / "cfg.json").write_text(json.dumps(self.saelens_cfg(lab_meta), indent=2))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "SparseAutoencoder":
        """Load an SAE saved by the lab, or by SAELens in an architecture the registry maps."""
        folder = Path(folder)
        try:
            cfg = json.loads((folder / "cfg.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LabError(f"cannot read {folder / 'cfg.json'} ({first_line(e)}): "
                           "it needs cfg.json and sae_weights.safetensors") from None
        try:
            tensors = load_file(str(folder / "sae_weights.safetensors"))
        except Exception as e:  # OSError, or safetensors' own error for a truncated or garbled file
            raise LabError(f"cannot read {folder / 'sae_weights.safetensors'} ({first_line(e)}): the file is missing, truncated "
                           "or not safetensors") from None
        if not isinstance(cfg, dict):
            raise LabError(f"{folder / 'cfg.json'} is not a JSON object: it holds the SAE's d_in, d_sae and architecture")
        meta = cfg.get("metadata") or {}
        arch = meta.get("lab_architecture") or architectures.from_saelens(str(cfg.get("architecture", "")),
                                                                          meta.get("training_architecture")).name
        try:
            d_in, d_sae, k = int(cfg["d_in"]), int(cfg["d_sae"]), int(meta.get("k") or cfg.get("k") or 1)  # the lab's own k first
        except (KeyError, TypeError, ValueError) as e:
            raise LabError(f"{folder / 'cfg.json'} lacks a valid {first_line(e)}: "
                           "it needs whole numbers d_in and d_sae") from None
        expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
        for name, shape in expected.items():
            got = tuple(tensors[name].shape) if name in tensors else None
            if got != shape:
                held = "no " + name if got is None else f"{name} of shape {list(got)}"
                raise LabError(f"{folder / 'cfg.json'} says d_in = {d_in}, d_sae = {d_sae}, but sae_weights.safetensors holds "
                               f"{held} "
                               f"(expected {list(shape)}): the two files do not belong together")
        sae = cls(d_in, d_sae, arch, min(k, d_sae), meta.get("lab_options"))
        with torch.no_grad():
            sae.W_enc_rows.copy_(tensors["W_enc"].t())
            for name in ("b_enc", "W_dec", "b_dec"):
                getattr(sae, name).copy_(tensors[name])
            sae.arch.load_tensors(sae, tensors)
        return sae.to(device).eval()


def auto_lr(d_sae: int, base: float = 2e-4) -> float:
    """dictionary_learning / sparsify's 2e-4 / sqrt(d_sae / 2^14), times 8 for the lab's small budgets
    (hundreds, not tens of thousands, of steps: 4.5e-3 at d_sae 2048, tuned on held-out FVU, README)."""
    return 8 * base / math.sqrt(d_sae / 2**14)

