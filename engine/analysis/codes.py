"""One sparse encoding of every token of every domain: the input every analysis stage reads.

Encoding is the expensive part (a [tokens x d_in] @ [d_in x d_sae] product); doing it once and
keeping only the active (row, feature, value) triplets -- k per token -- makes every later stage
a cheap operation on a few million entries instead of another pass over the activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from core.errors import LabError
from core.lab import Lab
from engine.artifacts import load_run, stores_for_run
from engine.collection.store import ActivationStore
from engine.config import ExperimentConfig
from engine.training.sae import SparseAutoencoder


@dataclass
class DomainCodes:
    """The active latents of one domain's tokens, sorted by row, plus where each row sits in the text."""

    name: str
    n_rows: int
    val_start: int  # rows from here on are the held-out 10%
    rows: np.ndarray  # int32 [nnz] ascending
    cols: np.ndarray  # int32 [nnz]
    vals: np.ndarray  # float32 [nnz], all > 0
    tokens: np.ndarray  # int32 [n_seq, seq_len], special tokens included
    row_seq: np.ndarray  # int32 [n_rows]
    row_pos: np.ndarray  # int32 [n_rows]
    store_key: str = ""  # the activation set (activation_sets.key) the rows come from

    @cached_property
    def row_tokens(self) -> np.ndarray:
        """Token id at each row."""
        return self.tokens[self.row_seq, self.row_pos]

    @cached_property
    def row_prev(self) -> np.ndarray:
        """Token id just before each row in its sequence ([CLS]/[SEP] included), -1 at position 0."""
        prev = self.tokens[self.row_seq, np.maximum(self.row_pos - 1, 0)].copy()
        prev[self.row_pos == 0] = -1
        return prev

    @cached_property
    def row_of(self) -> np.ndarray:
        """[n_seq, seq_len] -> activation row, -1 where the position has none (special tokens)."""
        out = np.full(self.tokens.shape, -1, dtype=np.int32)
        out[self.row_seq, self.row_pos] = np.arange(self.n_rows, dtype=np.int32)
        return out

    @cached_property
    def by_feature(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted feature << 32 | row keys, entry index of each): the entries of feature f in a row
        range are one ``searchsorted`` away."""
        keys = (self.cols.astype(np.int64) << 32) | self.rows.astype(np.int64)
        order = stable_group_order(self.cols, int(self.cols.max()) + 1 if len(self.cols) else 0)  # rows are already ascending
        return keys[order], order


def stable_group_order(groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Stable argsort of small non-negative ids: numpy radix-sorts 16-bit keys in linear time
    (3x faster than a comparison sort of the same 1.6M entries)."""
    if n_groups <= 1 << 16:
        return np.argsort(groups.astype(np.uint16), kind="stable")
    return np.argsort(groups, kind="stable")


@dataclass
class RunData:
    run_id: str
    resolved: dict[str, Any]
    config: ExperimentConfig
    sae: SparseAutoencoder
    domains: list[DomainCodes]
    notes: list[str] = field(default_factory=list)

    @property
    def d_sae(self) -> int:
        return self.sae.d_sae

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.domains]


@torch.inference_mode()
def encode_store(sae: SparseAutoencoder, store: ActivationStore, name: str, hook: str, layer: int,
                 chunk_rows: int) -> DomainCodes:
    """Stream a domain's activations through the SAE chunk by chunk, keeping the active entries."""
    acts = store.acts(hook, layer)
    if acts.shape[1] != sae.d_in:
        raise LabError(f"the SAE expects {sae.d_in}-wide activations but domain '{name}' has {acts.shape[1]}: the run and its "
                       "activation set do not match")
    n = store.n_rows
    parts_r, parts_c, parts_v = [], [], []
    for a in range(0, n, chunk_rows):
        x = torch.from_numpy(np.asarray(acts[a : min(a + chunk_rows, n)], dtype=np.float32))
        code = sae.encode_sparse(x)
        keep = code.vals > 0
        parts_r.append((code.rows[keep].to(torch.int32) + a).numpy())
        parts_c.append(code.cols[keep].to(torch.int32).numpy())
        parts_v.append(code.vals[keep].float().numpy())
    rows = np.concatenate(parts_r) if parts_r else np.zeros(0, np.int32)
    cols = np.concatenate(parts_c) if parts_c else np.zeros(0, np.int32)
    vals = np.concatenate(parts_v) if parts_v else np.zeros(0, np.float32)
    rs = np.asarray(store.rows())
    tokens = np.asarray(store.tokens())
    return DomainCodes(name, n, store.val_start, rows, cols, vals, tokens, rs[:, 0].astype(np.int32), rs[:, 1].astype(np.int32),
                       store_key=store.key)


def load_run_data(lab: Lab, run_id: str, chunk_rows: int = 16384) -> RunData:
    run = load_run(lab, run_id, "cpu")
    resolved, config, sae = run.resolved, run.config, run.sae
    stores, notes = stores_for_run(lab, resolved, config)
    domains = [encode_store(sae, s, name, config.hook, config.layer, chunk_rows) for name, s in stores.items()]
    return RunData(run_id, resolved, config, sae, domains, notes)
