"""The text probe (seed 004): the top features of every token of any text, and any feature's
activations over texts the user gives.

The text goes through the run's model exactly as collection sends the corpora (the tokenizer's
own special tokens around it, the hooked module's output rounded to float16 as the stores hold
it), so a probe reproduces what the analysis saw on the same tokens in the same context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.errors import LabError
from core.lab import Lab
from engine.artifacts import load_run
from engine.collection.collect import special_wrapping
from engine.collection.hooks import StopForward, hook_module, layer_list, record, stop_after
from engine.collection.models import LoadedModel, load_model, resolve_model
from engine.training.sae import SparseAutoencoder


@dataclass
class ProbeToken:
    position: int
    token_id: int
    token: str
    features: list[tuple[int, float]]  # (feature, activation), strongest first
    special: bool = False


@dataclass
class ProbeResult:
    run_id: str
    text: str
    tokens: list[ProbeToken]
    truncated: bool = False
    totals: list[tuple[int, float]] = field(default_factory=list)  # features by summed activation over the text

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "text": self.text, "truncated": self.truncated,
            "tokens": [t.__dict__ for t in self.tokens], "totals": self.totals,
        }


class Prober:
    """A run's model, tokenizer and SAE, loaded once for many probes (the app keeps one)."""

    def __init__(self, lab: Lab, run_id: str, device: str | torch.device = "cpu"):
        self.run_id = run_id
        self.device = torch.device(device)
        run = load_run(lab, run_id, self.device)  # unknown or damaged run -> one LabError, before the model loads
        self.config = run.config
        self.sae: SparseAutoencoder = run.sae
        self.loaded: LoadedModel = load_model(resolve_model(self.config.model), self.device)
        self.prefix, self.suffix = special_wrapping(self.loaded.tokenizer)
        self.special = self.loaded.special_ids

    def tokenize(self, text: str) -> tuple[list[int], bool]:
        ids = self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = min(self.config.data.seq_len, self.loaded.info.max_positions) - len(self.prefix) - len(self.suffix)
        truncated = len(ids) > room
        return self.prefix + ids[:room] + self.suffix, truncated

    @torch.inference_mode()
    def activations(self, batch: list[list[int]]) -> list[np.ndarray]:
        """Hooked-site activations [len, d_in] of each id list (float16-rounded, like the stores)."""
        info, model = self.loaded.info, self.loaded.model
        module = hook_module(model, info.model_type, info.n_layers, self.config.hook, self.config.layer)
        last = layer_list(model, info.n_layers)[self.config.layer]
        backbone = getattr(model, "base_model", model)
        L = max(len(ids) for ids in batch)
        pad = self.loaded.tokenizer.pad_token_id or 0
        ids = torch.full((len(batch), L), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), L), dtype=torch.long)
        for i, seq in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        sink: dict[str, torch.Tensor] = {}
        with record({"site": module}, sink), stop_after(last):
            try:
                backbone(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
            except StopForward:
                pass
        acts = sink["site"].float().to(torch.float16).float().cpu().numpy()
        return [acts[i, : len(seq)] for i, seq in enumerate(batch)]

    @torch.inference_mode()
    def encode(self, acts: np.ndarray) -> np.ndarray:
        """Dense [len, d_sae] feature activations."""
        return self.sae.encode(torch.from_numpy(acts).to(self.device)).float().cpu().numpy()

    def probe(self, text: str, top_n: int = 5) -> ProbeResult:
        if not text or not text.strip():
            raise LabError("empty text: give the probe some text, e.g. \"def main():\"")
        ids, truncated = self.tokenize(text)
        f = self.encode(self.activations([ids])[0])
        vocab = self.loaded.tokenizer.convert_ids_to_tokens(ids)
        tokens = []
        for pos, (tid, tok) in enumerate(zip(ids, vocab)):
            special = tid in self.special and self.config.data.exclude_special_tokens
            row = f[pos]
            top = np.argsort(-row, kind="stable")[:top_n]
            feats = [] if special else [(int(j), float(row[j])) for j in top if row[j] > 0]
            tokens.append(ProbeToken(pos, int(tid), tok, feats, special))
        keep = np.array([not t.special for t in tokens])
        total = f[keep].sum(0) if keep.any() else np.zeros(f.shape[1])
        order = np.argsort(-total, kind="stable")[: max(top_n * 2, 10)]
        totals = [(int(j), float(total[j])) for j in order if total[j] > 0]
        return ProbeResult(self.run_id, text, tokens, truncated, totals)

    def rank_texts(self, feature: int, texts: list[str], top_k: int = 20, batch_size: int = 16) -> list[dict[str, Any]]:
        """The feature's strongest activation in each text, best texts first."""
        if not 0 <= feature < self.sae.d_sae:
            raise LabError(f"feature {feature} does not exist: this SAE has features 0 to {self.sae.d_sae - 1}")
        texts = [t for t in texts if t and t.strip()]
        out = []
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for a in range(0, len(order), batch_size):
            idx = order[a : a + batch_size]
            batch = [self.tokenize(texts[i])[0] for i in idx]
            for i, ids, acts in zip(idx, batch, self.activations(batch)):
                col = self.encode(acts)[:, feature]
                col[[p for p, t in enumerate(ids) if t in self.special]] = 0
                p = int(col.argmax())
                out.append({"text": texts[i], "activation": float(col[p]), "position": p,
                            "token": self.loaded.tokenizer.convert_ids_to_tokens([ids[p]])[0]})
        out.sort(key=lambda r: -r["activation"])
        return out[:top_k]


def probe_text(lab: Lab, run_id: str, text: str, top_n: int = 5) -> ProbeResult:
    return Prober(lab, run_id).probe(text, top_n)


def rank_texts(lab: Lab, run_id: str, feature: int, texts: list[str], top_k: int = 20) -> list[dict[str, Any]]:
    return Prober(lab, run_id).rank_texts(feature, texts, top_k)
