"""Token strings for display, and the tokens no label or token effect should name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass
class Vocab:
    strings: list[str]  # display string of every id (WordPiece keeps ##, byte-level BPE is decoded)
    excluded: np.ndarray  # bool [size]: special, unused and padding ids

    @property
    def size(self) -> int:
        return len(self.strings)

    @property
    def arrow(self) -> pa.Array:
        if not hasattr(self, "_arrow"):
            self._arrow = pa.array(self.strings, type=pa.string())
        return self._arrow

    def take(self, ids: np.ndarray) -> pa.Array:
        """Display strings of ``ids`` as an Arrow array (a C++ gather: no Python loop per token)."""
        return self.arrow.take(pa.array(np.asarray(ids, dtype=np.int64)))

    def text(self, tid: int) -> str:
        return self.strings[tid] if 0 <= tid < self.size else f"<{tid}>"


_CACHE: dict[tuple[str, int], Vocab] = {}


def load_vocab(tokenizer, min_size: int = 0, cache_key: str = "") -> Vocab:
    """Every id's string, once per tokenizer and process.

    WordPiece pieces are kept as they are ('##ing' marks a continuation, which matters when reading
    a context); byte-level and SentencePiece pieces are decoded so 'Ġthe' reads ' the'."""
    key = (cache_key or str(id(tokenizer)), min_size)
    if key in _CACHE:
        return _CACHE[key]
    n = max(len(tokenizer), min_size)
    raw = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    wordpiece = _is_wordpiece(tokenizer)
    strings: list[str] = []
    for i, t in enumerate(raw):
        if t is None:
            strings.append(f"<{i}>")
        elif wordpiece or t in (tokenizer.all_special_tokens or []):
            strings.append(t)
        else:
            try:
                strings.append(tokenizer.convert_tokens_to_string([t]))
            except Exception:
                strings.append(t)
    strings = [_printable(t) for t in strings]
    strings += [f"<{i}>" for i in range(len(raw), n)]
    excluded = np.zeros(n, dtype=bool)
    excluded[[i for i in (tokenizer.all_special_ids or []) if 0 <= i < n]] = True
    excluded[len(raw):] = True
    for i, t in enumerate(raw):
        if t is None or (t.startswith("[unused") and t.endswith("]")) or t.startswith("<|extra") or t.startswith("<extra_id"):
            excluded[i] = True
    vocab = Vocab(strings, excluded)
    _CACHE[key] = vocab
    return vocab


_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if chr(c) not in "\n\t\r"}


def _printable(s: str) -> str:
    """Control characters as escapes: invisible in a UI anyway, and U+001F joins stored sequences."""
    return s.translate(_CONTROL) if any(ord(ch) < 32 for ch in s) else s


def _is_wordpiece(tokenizer) -> bool:
    try:
        return type(tokenizer.backend_tokenizer.model).__name__ == "WordPiece"
    except AttributeError:
        return "Bert" in type(tokenizer).__name__
