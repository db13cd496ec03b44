"""The plain reference loop the benchmark measures the lab's trainer against.

It is the tutorial seed's training loop (003: fp32, dense encoder *and* decoder, Adam, decoder
columns renormalised after each step, its batch size 256 and learning rate 1e-3), with the seed's
ReLU + L1 replaced by TopK so both sides run at the same L0. Data is indexed from an in-memory
tensor (no per-row DataLoader), so the comparison measures training, not Python data plumbing.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn


class ReferenceTopKSAE(nn.Module):
    def __init__(self, d_in: int, d_sae: int, k: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.k = k
        self.W_enc = nn.Parameter(torch.randn(d_sae, d_in, generator=g) / math.sqrt(d_in))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        W_dec = torch.randn(d_in, d_sae, generator=g) / math.sqrt(d_sae)
        self.W_dec = nn.Parameter(W_dec / W_dec.norm(dim=0, keepdim=True))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = (x - self.b_dec) @ self.W_enc.T + self.b_enc
        v, i = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, i, torch.relu(v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x) @ self.W_dec.T + self.b_dec


def train_reference(
    acts: np.ndarray, d_sae: int, k: int, epochs: float, seed: int = 0, batch_size: int = 256, lr: float = 1e-3
) -> tuple[ReferenceTopKSAE, float, int]:
    """Train on ``acts`` (float16/32 rows); returns (sae, seconds, tokens seen)."""
    torch.manual_seed(seed)
    data = torch.from_numpy(np.asarray(acts, dtype=np.float32))
    sae = ReferenceTopKSAE(data.shape[1], d_sae, k, seed)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    n = len(data)
    steps = max(1, math.ceil(epochs * (n // batch_size)))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    pos = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        batch = data[perm[pos : pos + batch_size]]
        pos += batch_size
        opt.zero_grad()
        loss = (sae(batch) - batch).pow(2).mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            sae.W_dec.data = sae.W_dec.data / sae.W_dec.data.norm(dim=0, keepdim=True)
    return sae, time.perf_counter() - t0, steps * batch_size
