"""A run's sparse codes: one encoder pass over the activations, shared by evaluation and analysis.

``encode_rows`` streams rows of an activation file through an SAE and yields each chunk's active
entries. It computes the pre-activations from the SAE's *folded* tensors (the ones saved in
``sae_weights.safetensors``), so the SAE in memory right after training and the same SAE loaded
back from its folder give bit-identical codes.

**bf16 selection, exact values.** On a CPU with native bf16 (``engine.device.cpu_has_fast_bf16``) or
a GPU, a TopK SAE's dense product is done in bf16 (half the time of fp32 here) and only chooses
*candidates*: the k + m largest bf16 pre-activations of each row. Their values are then recomputed
in fp32 (a sampled product, k + m dot products per row) and the k largest taken. A row is kept only
when that choice is provably the fp32 one: every entry left out has a bf16 value at most the
(k + m)-th, and a bf16 product with fp32 accumulation is off by at most
``||dx|| max_j ||w'_j|| + ||x~|| (max_j ||dw_j|| + gamma max_j ||w~_j||) + u |value|`` (x' and w' the
bias-augmented input and encoder rows, x~ and w~ their bf16 roundings, dx and dw what the rounding
dropped, u = 2^-8, gamma the fp32 accumulation's (d + 1) 2^-24; Cauchy-Schwarz), so when the k-th
exact value exceeds the (k + m)-th bf16 value plus that bound no left-out entry can beat it. The
rows that fail are encoded again in fp32. Selected latents are the fp32 path's; values agree to fp32 rounding (a
different summation order: ~1e-6 relative; ``tests/engine/evaluation/test_codes.py`` checks both).
Other architectures, and CPUs without native bf16, take the fp32 path (``arch.encode``).

**The cache.** Evaluation encodes every domain's held-out rows right before the worker analyses the
run in the same process; ``CODES`` keeps those codes (keyed by run, SAE fingerprint, activation set,
site, device and row range; bounded in bytes) so the analysis reads them instead of encoding the
same rows again, and drops them when it is done. Nothing cached (a run analysed later by
``python -m engine analyze RUN``): the analysis encodes them itself, the same way.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from engine.device import cpu_has_fast_bf16
from engine.evaluation.chunks import CHUNK_ROWS
from engine.training.architectures.topk import TopK
from engine.training.sae import SparseAutoencoder, SparseCode
from engine.training.sparse_ops import topk_rows

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

# bf16 selection on a CPU with native bf16: off. On the 2-core AMD EPYC (avx512_bf16) the bf16 product
# takes half the fp32 one's time, but the top-(k + m) of a bf16 row costs more than fp32's top-k and
# the sampled fp32 recompute adds the rest: 2.52 s against 2.42 s (the previous encode_sparse) for
# 65k rows, interleaved (/tmp bench in the commit message; `python -m engine bench analysis` prints it).
BF16_ON_CPU = False
BF16_U = 2.0 ** -8  # unit roundoff of bfloat16 (8 significant bits)


@dataclass
class Encoder:
    """The folded tensors an SAE encodes with, and how: ``fingerprint`` names them (the cache key)."""

    sae: SparseAutoencoder
    W: torch.Tensor  # [d_sae, d_in] fp32 encoder rows acting on raw activations
    b_enc: torch.Tensor
    b_dec: torch.Tensor
    fingerprint: str
    bf16: bool  # TopK with bf16 candidate selection
    k: int = 0
    margin: int = 0
    W_aug16: torch.Tensor | None = None  # [d_sae, d_in + 1] bf16: encoder rows with the bias as a last column
    w_norm: float = 0.0  # max_j ||w'_j||, w'_j = (w_j, b_j)
    dw_norm: float = 0.0  # max_j ||w'_j - bf16(w'_j)||
    w16_norm: float = 0.0  # max_j ||bf16(w'_j)||
    fallback_rows: int = 0

    @classmethod
    @torch.no_grad()
    def of(cls, sae: SparseAutoencoder, device: torch.device | str = "cpu", bf16: bool | None = None) -> "Encoder":
        device = torch.device(device)
        t = {name: v.detach().to(device) for name, v in sae.folded_tensors().items()}
        h = hashlib.sha1(sae.architecture.encode())
        for name in sorted(t):
            h.update(name.encode())
            h.update(t[name].cpu().numpy().tobytes())
        W = t["W_enc"].t().contiguous()
        fast = bf16 if bf16 is not None else (device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()
                                                                        and BF16_ON_CPU))
        fast = fast and type(sae.arch).encode is TopK.encode and 2 * sae.k <= sae.d_sae
        enc = cls(sae, W, t["b_enc"], t["b_dec"], h.hexdigest()[:16], fast)
        if fast:
            aug = torch.cat([W, t["b_enc"][:, None]], 1)
            enc.k, enc.margin = sae.k, max(8, (3 * sae.k) // 4)
            enc.W_aug16 = aug.to(torch.bfloat16)
            enc.w_norm = float(aug.double().norm(dim=1).max())
            enc.dw_norm = float((aug.double() - enc.W_aug16.double()).norm(dim=1).max())  # the rows' own rounding
            enc.w16_norm = float(enc.W_aug16.double().norm(dim=1).max())
        return enc

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> SparseCode:
        """Active entries (values > 0, rows ascending) of raw activations."""
        x = x.to(self.W.device, torch.float32)
        if not self.bf16:
            pre = torch.addmm(self.b_enc, x - self.b_dec, self.W.t())
            rows, cols, vals = self.sae.arch.encode(self.sae, pre)
        else:
            rows, cols, vals = self._topk_bf16(x - self.b_dec)
        keep = vals > 0
        return SparseCode(rows[keep], cols[keep], vals[keep], x.shape[0])

    def _topk_bf16(self, xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, d = xc.shape
        k, m = self.k, self.margin
        xa = torch.empty(B, d + 1, dtype=torch.bfloat16, device=xc.device)
        xa[:, :d] = xc
        xa[:, d] = 1
        cand_v, cand = topk_rows(torch.mm(xa, self.W_aug16.t()), k + m)
        n = k + m
        crow = torch.arange(0, B * n + 1, n, device=xc.device)
        pattern = torch.sparse_csr_tensor(crow, cand.reshape(-1), torch.zeros(B * n, device=xc.device), (B, self.W.shape[0]),
                                          check_invariants=False)
        exact = (torch.sparse.sampled_addmm(pattern, xc, self.W.t(), beta=0.0).values().view(B, n) + self.b_enc[cand])
        v, j = exact.topk(k, dim=1)
        idx = cand.gather(1, j)
        rest = cand_v.amin(1).double()  # the (k + m)-th largest bf16 value: no entry left out is above it
        # x'.w' = x~.w~ + dx.w' + x~.dw (x~, w~ the bf16 roundings, dx, dw what they dropped), so a bf16
        # value is off by at most ||dx|| ||w'|| + ||x~|| ||dw|| (Cauchy-Schwarz), plus fp32 accumulation
        # (gamma ||x~|| ||w~||) and the product's rounding to bf16 (u |value|).
        x16 = xa.double()
        dx = (xc.double() - x16[:, :d]).norm(dim=1)
        x16_norm = x16.norm(dim=1)
        gamma = (d + 1) * 2.0**-24 * 1.01
        bound = (dx * self.w_norm + x16_norm * (self.dw_norm + gamma * self.w16_norm)
                 + 1.01 * BF16_U * rest.abs() + 1e-6)
        bad = (v[:, -1].double() <= rest + bound).nonzero().squeeze(1)
        if len(bad):  # not provably the fp32 choice: those rows in fp32
            self.fallback_rows += len(bad)
            pre = torch.addmm(self.b_enc, xc[bad], self.W.t())
            v[bad], idx[bad] = pre.topk(k, dim=1)
        rows = torch.arange(B, device=xc.device).repeat_interleave(k)
        return rows, idx.reshape(-1), v.reshape(-1).clamp_min(0)


@dataclass
class RowCodes:
    """Active entries of rows [start, stop) of one activation file, as numpy (rows absolute, ascending)."""

    start: int
    stop: int
    rows: np.ndarray  # int32
    cols: np.ndarray  # int32
    vals: np.ndarray  # float32, all > 0

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.cols.nbytes + self.vals.nbytes

    @classmethod
    def join(cls, parts: list["RowCodes"]) -> "RowCodes":
        if not parts:
            return cls(0, 0, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))
        return cls(parts[0].start, parts[-1].stop, np.concatenate([p.rows for p in parts]),
                   np.concatenate([p.cols for p in parts]), np.concatenate([p.vals for p in parts]))


def encode_rows(encoder: Encoder, acts, start: int, stop: int,
                chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, torch.Tensor, SparseCode]]:
    """(first row, fp32 input, code) per chunk of rows [start, stop) of a [rows, d_in] array."""
    for a in range(start, stop, chunk_rows):
        x = torch.from_numpy(np.asarray(acts[a : min(a + chunk_rows, stop)], dtype=np.float32)).to(encoder.W.device)
        yield a, x, encoder.encode(x)


def to_numpy(code: SparseCode, first_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return ((code.rows.to(torch.int32) + first_row).cpu().numpy(), code.cols.to(torch.int32).cpu().numpy(),
            code.vals.float().cpu().numpy())


def encode_chunks(encoder: Encoder, acts, start: int, stop: int, chunk_rows: int = CHUNK_ROWS) -> list[RowCodes]:
    """Rows [start, stop) encoded, one ``RowCodes`` per chunk (join them once, where they are used)."""
    return [RowCodes(a, a + code.batch, *to_numpy(code, a)) for a, _, code in encode_rows(encoder, acts, start, stop, chunk_rows)]


def encode_range(encoder: Encoder, acts, start: int, stop: int, chunk_rows: int = CHUNK_ROWS) -> RowCodes:
    out = RowCodes.join(encode_chunks(encoder, acts, start, stop, chunk_rows))
    out.start, out.stop = start, stop
    return out


class CodeCache:
    """Codes computed by one stage of a run and read by a later one in the same process."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, RowCodes] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(run_id: str, encoder: Encoder, store_key: str, hook: str, layer: int, start: int, stop: int,
            chunk_rows: int = CHUNK_ROWS) -> tuple:
        return (run_id, encoder.fingerprint, encoder.bf16, encoder.W.device.type, store_key, hook, int(layer), int(start),
                int(stop), int(chunk_rows))

    def put(self, key: tuple, codes: RowCodes) -> None:
        with self._lock:
            self._entries.pop(key, None)
            if codes.nbytes > self.max_bytes:
                return
            self._entries[key] = codes
            while sum(c.nbytes for c in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)

    def get(self, key: tuple) -> RowCodes | None:
        with self._lock:
            return self._entries.get(key)

    def drop(self, run_id: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == run_id]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def held_for(self, run_id: str) -> int:
        """Entries kept for one run."""
        with self._lock:
            return sum(k[0] == run_id for k in self._entries)


CODES = CodeCache()
