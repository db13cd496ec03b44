"""The text behind every stored activation row: document and character span, recovered and checked.

An activation store keeps token ids, not text (``tokens.npy``: the packed windows of
``engine.collection.collect.build_sequences``). Concepts are decided on the original text, so
the text is rebuilt exactly as collection built it: the same documents in the same order
(``corpora.documents(domain, seed)``), each tokenized without special tokens and followed by the
separator, cut into windows of ``seq_len`` minus the special tokens around each window. This
time the tokenizer also returns each token's character offsets (``return_offsets_mapping``,
which every Hugging Face *fast* tokenizer supports).

Every rebuilt window is compared with the stored token ids. A window that differs (the corpus
or tokenizer changed since collection, or a hub dataset is out of reach) gets no text: its rows
are left out of every concept, and the count is reported. The result is cached in the store's
folder (``concept_text.npz``): it depends only on the store, which never changes once written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from core.errors import LabError
from engine.collection import corpora
from engine.collection.collect import separator_id, special_wrapping
from engine.collection.store import ActivationStore
from engine.config import DomainSpec

TEXT_FILE = "concept_text.npz"
TEXT_VERSION = 1


@dataclass
class StoreText:
    docs: list[str]
    row_doc: np.ndarray  # int32 [n_rows]: document of each row, -1 = no text (special token, or unmatched window)
    row_start: np.ndarray  # int32 [n_rows]: character span of the row's token inside its document
    row_end: np.ndarray
    n_sequences: int
    bad_sequences: np.ndarray  # int32: windows whose rebuilt token ids differ from the stored ones

    @property
    def n_rows(self) -> int:
        return len(self.row_doc)

    def save(self, path) -> None:
        starts = np.zeros(len(self.docs) + 1, dtype=np.int64)
        starts[1:] = np.cumsum([len(d) for d in self.docs])
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, version=TEXT_VERSION, text=np.array("".join(self.docs)), doc_start=starts,
                            row_doc=self.row_doc, row_start=self.row_start, row_end=self.row_end,
                            n_sequences=self.n_sequences, bad_sequences=self.bad_sequences)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "StoreText | None":
        try:
            with np.load(path) as z:
                if int(z["version"]) != TEXT_VERSION:
                    return None
                text, starts = str(z["text"]), z["doc_start"]
                docs = [text[a:b] for a, b in zip(starts[:-1], starts[1:])]
                return cls(docs, z["row_doc"], z["row_start"], z["row_end"], int(z["n_sequences"]), z["bad_sequences"])
        except (OSError, KeyError, ValueError):
            return None


def _batches(docs: Iterable[str], size: int = 64) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in docs:
        batch.append(text)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def align_store(store: ActivationStore, tokenizer, docs: Iterable[str]) -> StoreText:
    """Rebuild the store's windows from ``docs`` with character offsets and check them against its ids."""
    if not getattr(tokenizer, "is_fast", False):
        raise LabError("concepts need a fast (Rust) Hugging Face tokenizer for character offsets: "
                       "save the model with its tokenizer.json")
    tokens = np.asarray(store.tokens())
    n_seq, seq_len = tokens.shape
    prefix, suffix = special_wrapping(tokenizer)
    sep = separator_id(tokenizer)
    L = seq_len - len(prefix) - len(suffix)
    need = n_seq * L
    ids: list[int] = []
    doc_of: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    kept_docs: list[str] = []
    for batch in _batches(docs):
        enc = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=True)
        for text, seq, offs in zip(batch, enc["input_ids"], enc["offset_mapping"]):
            if not seq:
                continue
            d = len(kept_docs)
            kept_docs.append(text)
            ids.extend(seq)
            doc_of.extend([d] * len(seq))
            starts.extend(a for a, _ in offs)
            ends.extend(b for _, b in offs)
            if sep is not None:
                ids.append(sep)
                doc_of.append(-1)
                starts.append(0)
                ends.append(0)
        if len(ids) >= need:
            break
    short = max(0, need - len(ids))
    stream = np.array(ids[:need] + [-1] * short, dtype=np.int64).reshape(n_seq, L)
    doc_s = np.array(doc_of[:need] + [-1] * short, dtype=np.int32)
    start_s = np.array(starts[:need] + [0] * short, dtype=np.int32)
    end_s = np.array(ends[:need] + [0] * short, dtype=np.int32)
    good = (stream == tokens[:, len(prefix) : len(prefix) + L]).all(1)
    rows = np.asarray(store.rows())
    seq, pos = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64) - len(prefix)
    inside = (pos >= 0) & (pos < L) & good[seq]
    idx = np.where(inside, seq * L + pos, 0)
    row_doc = np.where(inside, doc_s[idx], -1).astype(np.int32)
    used = np.unique(row_doc[row_doc >= 0])
    # Keep only documents some row points into (the last batch reads past the budget).
    remap = np.full(len(kept_docs) + 1, -1, dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return StoreText([kept_docs[i] for i in used], remap[row_doc], np.where(inside, start_s[idx], 0).astype(np.int32),
                     np.where(inside, end_s[idx], 0).astype(np.int32), n_seq, np.flatnonzero(~good).astype(np.int32))


def store_documents(store: ActivationStore) -> Iterator[str]:
    """The documents the store was collected from, in collection order (regenerated from its recipe)."""
    material = store.meta.get("material") or {}
    if "domain" not in material:
        raise LabError(f"activation set {store.key} does not record its corpus recipe: its text cannot be rebuilt")
    domain = DomainSpec.from_dict(material["domain"], "domain")
    return corpora.documents(domain, int(material.get("seed", store.meta.get("seed", 0))))


def load_store_text(store: ActivationStore, tokenizer, docs: Iterable[str] | None = None) -> StoreText:
    """The store's text (cached in its folder after the first call)."""
    path = store.path / TEXT_FILE
    if path.exists():
        cached = StoreText.load(path)
        if cached is not None and cached.n_rows == store.n_rows:
            return cached
    text = align_store(store, tokenizer, store_documents(store) if docs is None else docs)
    try:
        text.save(path)
    except OSError:
        pass  # a read-only store: recomputed next time
    return text
