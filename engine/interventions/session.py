"""A run's model, SAE, tokenizer and corpora, loaded once per process for many interventions.

The app keeps calling ``run_intervention`` for one text at a time; the model comes from
``engine.collection.models.load_model`` (cached per process), the SAE and the activation sets are
opened once here, and the clean quantities every intervention compares against (the held-out CE
slices, the neighbour corpus embeddings) are computed on first use and kept.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import LabError
from core.lab import Lab
from db import query_rows
from engine.analysis.vocab import Vocab, load_vocab
from engine.artifacts import load_run, stores_for_run
from engine.collection.collect import special_wrapping
from engine.collection.hooks import hook_module
from engine.collection.models import LoadedModel, load_model, resolve_model
from engine.collection.store import ActivationStore
from engine.device import pick_device
from engine.evaluation.splice import mean_pool
from engine.interventions.edit import EditTrace, edited
from engine.interventions.spec import Edit
from engine.training.sae import SparseAutoencoder


@dataclass
class Batch:
    """Token ids [B, L] (int64) with the positions the SAE edits (``keep``) and the attention mask."""

    ids: torch.Tensor
    keep: torch.Tensor
    mask: torch.Tensor


class RunSession:
    def __init__(self, lab: Lab, run_id: str, device: str | torch.device | None = None):
        run = load_run(lab, run_id,
                       torch.device(device) if device is not None else None)  # unknown or damaged run -> one LabError
        self.lab, self.run_id, self.resolved = lab, run_id, run.resolved
        self.config = run.config
        self.sae: SparseAutoencoder = run.sae
        self.device = torch.device(device) if device is not None else pick_device(self.config.device)
        self.info = resolve_model(self.config.model)
        self.loaded: LoadedModel = load_model(self.info, self.device)
        self.is_causal = self.info.is_causal
        self.kind = "causal" if self.is_causal else "encoder"
        self.module = hook_module(self.loaded.model, self.info.model_type, self.info.n_layers,
                                  self.config.hook, self.config.layer)
        self.prefix, self.suffix = special_wrapping(self.loaded.tokenizer)
        self.special = self.loaded.special_ids
        self._special_t = (torch.tensor(sorted(self.special), dtype=torch.long) if self.special
                           else torch.zeros(0, dtype=torch.long))
        self._stores: dict[str, ActivationStore] | None = None
        self._vocab: Vocab | None = None
        self._emb_matrix: torch.Tensor | None = None
        self._ce_clean: dict[tuple[str, int], tuple[float, int]] = {}
        self._corpus: dict[int, dict[str, Any]] = {}
        self._dead: set[int] | None = None
        self._bounds: dict[str, np.ndarray] = {}
        self.lock = threading.RLock()  # one intervention at a time per session (clean caches are filled lazily)

    # -- inputs -------------------------------------------------------------------------------------
    @property
    def stores(self) -> dict[str, ActivationStore]:
        if self._stores is None:
            self._stores, _ = stores_for_run(self.lab, self.resolved, self.config)
        return self._stores

    @property
    def vocab(self) -> Vocab:
        if self._vocab is None:
            self._vocab = load_vocab(self.loaded.tokenizer, cache_key=self.info.identity)
        return self._vocab

    def keep_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Positions the SAE edits: every token but the special ones (when the run excluded them)."""
        if not self.config.data.exclude_special_tokens:
            return torch.ones_like(ids, dtype=torch.bool)
        return ~torch.isin(ids, self._special_t.to(ids.device))

    def text_ids(self, text: str, extra_tokens: int = 0) -> list[int]:
        """The text as the model sees it: causal LMs get the tokenizer's prefix (the text continues,
        so no end token); encoders the full wrapping ([CLS] text [SEP]), as in collection."""
        if text is None or not str(text).strip():
            raise LabError("empty text: give the intervention some text, e.g. --text \"def main():\"")
        body = self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not body:
            raise LabError("the text has no tokens this model knows: give it some words")
        ids = self.prefix + body + ([] if self.is_causal else self.suffix)
        limit = self.info.max_positions
        if len(ids) + extra_tokens > limit:
            more = f" plus {extra_tokens} generated" if extra_tokens else ""
            fix = "shorten it or lower --generate" if extra_tokens else "shorten it"
            raise LabError(f"the text is {len(ids)} tokens long (special tokens included){more}, more than the model's "
                           f"context of {limit} tokens: {fix}")
        return ids

    def text_batch(self, ids: list[int]) -> Batch:
        t = torch.tensor([ids], dtype=torch.long, device=self.device)
        return Batch(t, self.keep_of(t), torch.ones_like(t))

    def corpus_batch(self, domain: str, seqs: list[int]) -> Batch:
        """Stored sequences of a domain, with the positions the SAE was trained on (rows.npy)."""
        if domain not in self.stores:
            raise LabError(f"unknown domain '{domain}': run '{self.run_id}' has {', '.join(self.stores)}")
        store = self.stores[domain]
        n = int(store.meta["n_sequences"])
        bad = [s for s in seqs if not 0 <= int(s) < n]
        if bad:
            raise LabError(f"sequence {bad[0]} does not exist: domain '{domain}' has sequences 0 to {n - 1}")
        seqs = [int(s) for s in seqs]
        tokens = np.asarray(store.tokens()[seqs], dtype=np.int64)
        if domain not in self._bounds:
            self._bounds[domain] = sequence_bounds(store)
        keep = store_keep(store, seqs, tokens.shape, self._bounds[domain])
        ids = torch.from_numpy(tokens).to(self.device)
        return Batch(ids, torch.from_numpy(keep).to(self.device), torch.ones_like(ids))

    def pairs_batch(self, pairs: list[tuple[str, int]]) -> Batch:
        """Stored sequences from any of the run's domains, as (domain, sequence) pairs."""
        parts = [self.corpus_batch(d, [s]) for d, s in pairs]
        return Batch(torch.cat([p.ids for p in parts]), torch.cat([p.keep for p in parts]), torch.cat([p.mask for p in parts]))

    def held_out_sequences(self, domain: str, n: int) -> list[int]:
        """The first n held-out sequences of a domain (the same slice every time)."""
        store = self.stores[domain]
        total, n_val = int(store.meta["n_sequences"]), int(store.meta["n_val_sequences"])
        first = total - n_val
        return list(range(first, first + min(n, n_val)))

    # -- forwards -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, batch: Batch, edits: list[Edit] | None, trace: EditTrace | None = None) -> torch.Tensor:
        """Logits [B, L, V] (causal LMs) or final hidden states [B, L, d] (encoders), float32;
        ``edits=None`` is the clean model, ``[]`` the untouched splice."""
        with edited(self.module, self.sae, batch.keep, edits, trace):
            out = self.loaded.model(input_ids=batch.ids, attention_mask=batch.mask)
        return (out.logits if self.is_causal else out.last_hidden_state).float()

    def pooled(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        return mean_pool(hidden, batch.mask)

    def embedding_matrix(self) -> torch.Tensor:
        """[V, d] word embeddings (encoders' token effects read hidden-state changes through them)."""
        if self._emb_matrix is None:
            self._emb_matrix = self.loaded.model.get_input_embeddings().weight.detach().float()
        return self._emb_matrix

    def dead_features(self) -> set[int]:
        """Features the run's analysis found dead (empty when the run has no analysis)."""
        if self._dead is None:
            try:
                rows = query_rows(self.lab, "SELECT feature FROM features WHERE run_id = ? AND dead", [self.run_id])
            except Exception:  # no database or no analysis tables: nothing known
                rows = []
            self._dead = {int(r[0]) for r in rows}
        return self._dead

    # -- clean caches ---------------------------------------------------------------------------------
    def ce_clean(self, domain: str, n: int) -> tuple[list[int], float, int]:
        seqs = self.held_out_sequences(domain, n)
        key = (domain, n)
        if key not in self._ce_clean:
            self._ce_clean[key] = self.corpus_ce(domain, seqs, None)
        ce, count = self._ce_clean[key]
        return seqs, ce, count

    def corpus_ce(self, domain: str, seqs: list[int], edits: list[Edit] | None, chunk: int = 4) -> tuple[float, int]:
        """Next-token CE over the ordinary tokens of stored sequences, a few sequences per forward
        (8 x 128 positions of a 50k vocabulary are 200 MB of logits)."""
        total, count = 0.0, 0
        for a in range(0, len(seqs), chunk):
            b = self.corpus_batch(domain, seqs[a : a + chunk])
            ce, n = next_token_ce(self.forward(b, edits), b)
            total, count = total + ce * n, count + n
        return total / max(count, 1), count

    def corpus_embeddings(self, n_per_domain: int) -> dict[str, Any]:
        """Clean mean-pooled embeddings of the first n held-out sequences of every domain, computed once."""
        if n_per_domain not in self._corpus:
            embs, meta = [], []
            tok = self.loaded.tokenizer
            for domain in self.stores:
                seqs = self.held_out_sequences(domain, n_per_domain)
                for a in range(0, len(seqs), 16):
                    b = self.corpus_batch(domain, seqs[a : a + 16])
                    embs.append(self.pooled(self.forward(b, None), b))
                    for s, row in zip(seqs[a : a + 16], b.ids.tolist()):
                        text = tok.decode(row, skip_special_tokens=True)
                        meta.append({"domain": domain, "seq": s, "text": " ".join(text.split())[:240]})
            E = torch.cat(embs) if embs else torch.zeros(0, self.info.d_model)
            self._corpus[n_per_domain] = {"emb": F.normalize(E, dim=-1), "meta": meta}
        return self._corpus[n_per_domain]


def sequence_bounds(store: ActivationStore) -> np.ndarray:
    """[n_sequences + 1] offsets: the activation rows of sequence s are rows[b[s]:b[s + 1]]
    (rows run in (sequence, position) order)."""
    col = np.asarray(store.rows()[:, 0])
    return np.searchsorted(col, np.arange(int(store.meta["n_sequences"]) + 1), "left")


def store_keep(store: ActivationStore, seqs: list[int], shape: tuple[int, int], bounds: np.ndarray | None = None) -> np.ndarray:
    """Bool [len(seqs), L]: the positions of those sequences that have activation rows."""
    rows = store.rows()
    b = sequence_bounds(store) if bounds is None else bounds
    keep = np.zeros(shape, dtype=bool)
    for i, s in enumerate(seqs):
        keep[i, np.asarray(rows[b[s] : b[s + 1], 1])] = True
    return keep


def next_token_ce(logits: torch.Tensor, batch: Batch) -> tuple[float, int]:
    """Mean next-token cross-entropy over predicted ordinary tokens (as splice fidelity counts it)."""
    targets = batch.ids[:, 1:]
    valid = batch.keep[:, 1:]
    logp = F.log_softmax(logits[:, :-1], -1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    n = int(valid.sum())
    return (float(nll[valid].sum()) / max(n, 1), n)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with at most n torch intra-op threads (None: leave them). The setting is per process:
    other threads' work in that window runs with n too."""
    before = torch.get_num_threads()
    if not n or n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_SESSIONS: dict[tuple[str, str, str], RunSession] = {}
_SESSIONS_LOCK = threading.Lock()


def get_session(lab: Lab, run_id: str, device: str | torch.device | None = None) -> RunSession:
    """The run's session, created once per process (model, SAE and clean caches stay loaded)."""
    key = (str(lab.root.resolve()), str(run_id), str(device))
    with _SESSIONS_LOCK:
        if key not in _SESSIONS:
            _SESSIONS[key] = RunSession(lab, run_id, device)
        return _SESSIONS[key]


def drop_sessions() -> None:
    with _SESSIONS_LOCK:
        _SESSIONS.clear()
