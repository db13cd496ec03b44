"""Concept membership of every stored token: character classes carried over to tokens by their offsets.

A token belongs to a concept when any non-whitespace character of its span does (a token made
only of whitespace, as byte-level BPE has, looks at its whole span). Membership is *known* for a
(token, concept) pair only when the token has text, the concept applies to its domain's kind,
and the concept's extractor decided the token's document (see ``code.py``: a chunk that does not
parse leaves the AST concepts undecided). Unknown pairs are left out of the concept's evaluation.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.analysis.concepts.registry import ConceptRegistry, State
from engine.analysis.concepts.texts import StoreText

_WHITESPACE = np.array([ord(c) for c in " \t\n\r\f\v\u00a0"], dtype=np.uint32)


@dataclass
class Memberships:
    names: list[str]
    member: np.ndarray  # bool [n_rows, C]
    known: np.ndarray  # bool [n_rows, C]

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, names=np.array(self.names), n_rows=len(self.member),
                            member=np.packbits(self.member, axis=0), known=np.packbits(self.known, axis=0))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Memberships | None":
        try:
            with np.load(path) as z:
                n = int(z["n_rows"])
                return cls([str(s) for s in z["names"]], np.unpackbits(z["member"], axis=0, count=n).astype(bool),
                           np.unpackbits(z["known"], axis=0, count=n).astype(bool))
        except (OSError, KeyError, ValueError):
            return None


def memberships(text: StoreText, kind: str, registry: ConceptRegistry, states: list[State]) -> Memberships:
    """Membership of every row of one store in every registered concept."""
    names = [c.name for c in registry.concepts]
    col = {n: i for i, n in enumerate(names)}
    C, n_rows = len(names), text.n_rows
    starts = np.zeros(len(text.docs) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([len(d) for d in text.docs])
    T = int(starts[-1])
    decided = np.zeros((len(text.docs), C), dtype=bool)
    spans: list[list[np.ndarray]] = [[] for _ in range(C)]
    for d, doc in enumerate(text.docs):
        found, dec = registry.extract(doc, kind, states)
        for name in dec:
            if name in col:
                decided[d, col[name]] = True
        for name, sp in found.items():
            if sp and name in col:
                spans[col[name]].append(np.asarray(sp, dtype=np.int64).reshape(-1, 2) + starts[d])
    joined = "".join(text.docs)
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32) if T else np.zeros(0, np.uint32)
    nonspace = ~np.isin(codes, _WHITESPACE)
    has = text.row_doc >= 0
    doc = np.where(has, text.row_doc, 0)
    ga = starts[doc] + text.row_start
    gb = starts[doc] + np.maximum(text.row_end, text.row_start)
    ns_cum = np.concatenate([[0], np.cumsum(nonspace, dtype=np.int64)])
    any_ns = (ns_cum[gb] - ns_cum[ga]) > 0
    member = np.zeros((n_rows, C), dtype=bool)
    for c in range(C):
        if not spans[c]:
            continue
        sp = np.concatenate(spans[c])
        sp = sp[(sp[:, 1] > sp[:, 0]) & (sp[:, 0] >= 0)]
        sp[:, 1] = np.minimum(sp[:, 1], T)
        diff = np.bincount(sp[:, 0], minlength=T + 1) - np.bincount(sp[:, 1], minlength=T + 1)
        mask = np.cumsum(diff[:T]) > 0
        cum_ns = np.concatenate([[0], np.cumsum(mask & nonspace, dtype=np.int64)])
        cum_all = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        hit = np.where(any_ns, cum_ns[gb] - cum_ns[ga], cum_all[gb] - cum_all[ga]) > 0
        member[:, c] = hit & has
    known = has[:, None] & decided[doc]
    return Memberships(names, member & known, known)


def cache_key(registry: ConceptRegistry, keys_and_kinds: list[tuple[str, str]]) -> str:
    """Cached memberships depend on the concepts and on every domain of the run (the shared-name set)."""
    material = registry.fingerprint() + "|" + "|".join(f"{k}:{kind}" for k, kind in sorted(keys_and_kinds))
    return hashlib.sha256(material.encode()).hexdigest()[:16]
