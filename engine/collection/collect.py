"""One forward pass per batch records every requested (hook, layer) site.

Collecting all six layers of MiniLM costs one pass, not six (``python -m engine bench`` measures
it). Activations are checked for NaN/inf before anything is published.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from core.errors import LabError, writing_to
from core.lab import Lab
from engine.collection import corpora
from engine.collection.hooks import StopForward, hook_module, layer_list, record, stop_after
from engine.collection.models import LoadedModel, ModelInfo, load_model
from engine.collection.store import (
    ActivationStore,
    NpyStreamWriter,
    folder_lock,
    publish_folder,
    site_file,
    site_name,
    store_key,
    write_json_atomic,
)
from engine.config import DataConfig, DomainSpec
from engine.device import cpu_threads

Site = tuple[str, int]  # (hook, layer)


@dataclass
class Sequences:
    tokens: np.ndarray  # [n_seq, seq_len] int32, including the model's own special tokens
    keep: np.ndarray  # [n_seq, seq_len] bool: positions whose activations are stored
    n_val: int  # the last n_val sequences are held out

    @property
    def n_rows(self) -> int:
        return int(self.keep.sum())


def special_wrapping(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens this tokenizer puts before and after a single text ([CLS] .. [SEP], BOS ..)."""
    probe = tokenizer("a b", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    for i in range(len(probe) - len(plain) + 1):
        if probe[i : i + len(plain)] == plain:
            return list(probe[:i]), list(probe[i + len(plain) :])
    return [], []


def separator_id(tokenizer) -> int | None:
    for tid in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if tid is not None:
            return int(tid)
    return None


def build_sequences(
    loaded: LoadedModel, domain: DomainSpec, data: DataConfig, seed: int, docs: Iterable[str] | None = None
) -> Sequences:
    """Pack documents (separated by EOS/SEP) into fixed-length windows until the token budget is met."""
    tok = loaded.tokenizer
    prefix, suffix = special_wrapping(tok)
    sep = separator_id(tok)
    L = data.seq_len - len(prefix) - len(suffix)
    if L < 4:
        raise LabError(f"seq_len = {data.seq_len} leaves no room for text after special tokens: use a larger seq_len")
    if data.seq_len > loaded.info.max_positions:
        raise LabError(
            f"seq_len = {data.seq_len} exceeds the model's context of {loaded.info.max_positions} tokens: lower --seq-len"
        )
    special = loaded.special_ids
    budget = data.tokens_per_domain
    windows: list[list[int]] = []
    buf: list[int] = []
    kept = 0
    usable = 0  # non-special tokens seen, counted until the first (unknown-word tokens count as special)
    n_docs = 0
    docs = corpora.documents(domain, seed) if docs is None else iter(docs)

    def kept_in(window: list[int]) -> int:
        full = prefix + window + suffix
        return sum(1 for t in full if t not in special) if data.exclude_special_tokens else len(full)

    batch: list[str] = []

    def drain(texts: list[str]) -> None:
        nonlocal buf, kept, usable
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        for seq in ids:
            if not seq:
                continue
            if not usable:
                usable += sum(1 for t in seq if t not in special)
            buf.extend(seq)
            if sep is not None:
                buf.append(sep)
            while len(buf) >= L and kept < budget:
                w, buf = buf[:L], buf[L:]
                windows.append(w)
                kept += kept_in(w)

    for text in docs:
        if kept >= budget:
            break
        n_docs += 1
        batch.append(text)
        if len(batch) >= 64:
            drain(batch)
            batch = []
            if usable == 0:  # judge a sample, not the whole corpus: a huge file of noise fails at once
                _no_usable_tokens(domain, n_docs)
    if batch and kept < budget:
        drain(batch)
    if n_docs == 0:
        raise LabError(f"corpus for domain '{domain.name}' ({domain.source}) is empty: give it some text")
    if usable == 0:
        _no_usable_tokens(domain, n_docs)
    if kept < budget:
        available = kept + sum(1 for t in buf if t not in special)
        raise LabError(
            f"corpus for domain '{domain.name}' has only {available:,} tokens, fewer than tokens_per_domain = {budget:,}: "
            "lower --tokens or give the domain more text"
        )
    tokens = np.array([prefix + w + suffix for w in windows], dtype=np.int32)
    if data.exclude_special_tokens:
        keep = ~np.isin(tokens, np.array(sorted(special), dtype=np.int32))
    else:
        keep = np.ones_like(tokens, dtype=bool)
    n_val = max(1, int(round(len(windows) * data.val_fraction)))
    if len(windows) - n_val < 1:
        raise LabError(f"corpus for domain '{domain.name}' is too small to hold out {data.val_fraction:.0%}: raise --tokens")
    return Sequences(tokens, keep, n_val)


def _no_usable_tokens(domain: DomainSpec, n_docs: int) -> None:
    raise LabError(
        f"corpus for domain '{domain.name}' ({domain.source}) yields no usable tokens: its first {n_docs} documents "
        "tokenize to special or unknown-word tokens only (e.g. one long run of repeated characters): give it ordinary text"
    )


def store_material(info: ModelInfo, domain: DomainSpec, data: DataConfig, seed: int) -> dict:
    return {
        "model": info.identity,
        "domain": domain.to_dict(),
        "fingerprint": corpora.source_fingerprint(domain),
        "corpus_version": corpora.CORPUS_VERSION,
        "tokens_per_domain": data.tokens_per_domain,
        "seq_len": data.seq_len,
        "seed": seed,
        "exclude_special_tokens": data.exclude_special_tokens,
        "val_fraction": data.val_fraction,
    }


def find_store(lab: Lab, info: ModelInfo, domain: DomainSpec, data: DataConfig, seed: int) -> ActivationStore | None:
    path = lab.activations / store_key(store_material(info, domain, data, seed))
    return ActivationStore.open(path) if (path / "meta.json").exists() else None


def _forward_batches(
    loaded: LoadedModel,
    seqs: Sequences,
    sites: list[Site],
    batch_size: int,
    on_batch: Callable[[int, int, dict[Site, np.ndarray]], None],
    desc: str,
    progress: bool,
) -> None:
    """Run the model once per batch and hand the kept rows of every site to ``on_batch``."""
    info, model, device = loaded.info, loaded.model, loaded.device
    modules = {site_name(h, layer): hook_module(model, info.model_type, info.n_layers, h, layer) for h, layer in sites}
    # Nothing after the deepest requested block is needed: stop the pass there.
    last_block = layer_list(model, info.n_layers)[max(layer for _, layer in sites)]
    backbone = getattr(model, "base_model", model)
    n = len(seqs.tokens)
    bar = tqdm(total=n, desc=desc, unit="seq", disable=not progress, leave=False)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            ids = torch.from_numpy(np.asarray(seqs.tokens[start : start + batch_size], dtype=np.int64)).to(device)
            keep = torch.from_numpy(seqs.keep[start : start + batch_size]).to(device)
            sink: dict[str, torch.Tensor] = {}
            with record(modules, sink), stop_after(last_block):
                try:
                    backbone(input_ids=ids, attention_mask=torch.ones_like(ids))
                except StopForward:
                    pass
            out: dict[Site, np.ndarray] = {}
            for h, layer in sites:
                a = sink[site_name(h, layer)][keep].float()
                if not torch.isfinite(a).all():
                    raise LabError(
                        f"the model produced NaN or infinite activations at {h} layer {layer} (sequences "
                        f"{start}-{start + len(ids) - 1}): "
                        "check the model's weights or use another model"
                    )
                a16 = a.to(torch.float16)
                if not torch.isfinite(a16).all():
                    raise LabError(f"activations at {h} layer {layer} exceed the float16 range (|x| > 65504): use another hook "
                                   "point")
                out[(h, layer)] = a16.cpu().numpy()
            on_batch(start, len(ids), out)
            bar.update(len(ids))
    bar.close()


def _collect_sites(
    loaded: LoadedModel, seqs: Sequences, sites: list[Site], folder: Path, data: DataConfig, desc: str, progress: bool
) -> dict[str, dict]:
    """Write one .npy per site into ``folder`` (as *.partial) and return per-site statistics."""
    d = loaded.info.d_model
    n_rows = seqs.n_rows
    val_start = int(seqs.keep[: len(seqs.keep) - seqs.n_val].sum())
    writers = {s: NpyStreamWriter(folder / (site_file(*s) + ".partial"), (n_rows, d), np.float16) for s in sites}
    sums = {s: np.zeros(d, dtype=np.float64) for s in sites}
    sq = {s: 0.0 for s in sites}
    row = 0

    def on_batch(_start: int, _n: int, acts: dict[Site, np.ndarray]) -> None:
        nonlocal row
        for s, a in acts.items():
            writers[s].write(a)
            train = a[: max(0, min(len(a), val_start - row))].astype(np.float64)
            sums[s] += train.sum(0)
            sq[s] += float((train**2).sum())
        row += len(next(iter(acts.values())))

    try:
        _forward_batches(loaded, seqs, sites, data.batch_size, on_batch, desc, progress)
        for w in writers.values():
            w.close()
    except BaseException:  # (a full disk becomes one DiskFullError in _collect_plans: these writes set errno)
        for w in writers.values():
            w.discard()
        raise
    stats = {}
    for s in sites:
        os.replace(folder / (site_file(*s) + ".partial"), folder / site_file(*s))  # complete inside the temp folder
        stats[site_name(*s)] = {
            "file": site_file(*s),
            "hook": s[0],
            "layer": s[1],
            "train_mean": (sums[s] / max(val_start, 1)).tolist(),
            "train_mean_sq_norm": sq[s] / max(val_start, 1),
        }
    return stats


@dataclass
class _Plan:
    """One domain's share of a collection: what exists, what is missing, where it goes."""

    domain: DomainSpec
    key: str
    final: Path
    store: ActivationStore | None
    missing: list[Site]
    seqs: Sequences | None = None
    tmp: Path | None = None
    stats: dict | None = None


def collect_domains(
    lab: Lab,
    info: ModelInfo,
    device: torch.device,
    domains: list[DomainSpec],
    data: DataConfig,
    seed: int,
    sites: list[Site],
    progress: bool = True,
) -> dict[str, ActivationStore]:
    """Stores holding every requested site for every domain, collecting only what is missing.

    All or nothing: every domain's text is tokenized first (so an empty or too-small corpus is
    refused before any forward pass), activations go to temporary files, and only when every domain
    succeeded are they published (renamed into place). A failure leaves the lab as it was."""
    lab.activations.mkdir(parents=True, exist_ok=True)
    with folder_lock(lab.activations / ".collect.lock"):
        plans = []
        for d in domains:
            key = store_key(store_material(info, d, data, seed))
            final = lab.activations / key
            store = ActivationStore.open(final) if (final / "meta.json").exists() else None
            missing = [s for s in sites if store is None or not store.has(*s)]
            plans.append(_Plan(d, key, final, store, missing))
        todo = [p for p in plans if p.missing]
        if todo:
            return _collect_all_threads(lambda: _collect_plans(lab, info, device, plans, todo, data, seed, progress))
        return {p.domain.name: ActivationStore.open(p.final) for p in plans}


def _collect_all_threads(fn):
    """Collect with every core (``device.cpu_threads``): a worker limited to one thread for training
    would otherwise collect at half speed while the other workers wait for the collection lock it holds."""
    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def _collect_plans(lab, info, device, plans, todo, data, seed, progress) -> dict[str, ActivationStore]:
    """Phases 1-3 of collect_domains, under its lock."""
    loaded = load_model(info, device)
    for p in todo:  # phase 1: text -> sequences (cheap; refuses bad corpora early)
        if p.store is None:
            p.seqs = build_sequences(loaded, p.domain, data, seed)
        else:
            tokens = np.load(p.final / "tokens.npy")
            p.seqs = Sequences(tokens, _keep_from_rows(p.store, tokens.shape), int(p.store.meta["n_val_sequences"]))
    try:
        with writing_to(lab.activations):
            for p in todo:  # phase 2: forward passes into temporary files
                p.tmp = lab.activations / f".tmp-{p.key}-{os.getpid()}"
                shutil.rmtree(p.tmp, ignore_errors=True)
                p.tmp.mkdir(parents=True)
                t0 = time.perf_counter()
                p.stats = _collect_sites(loaded, p.seqs, p.missing, p.tmp, data, f"collect {p.domain.name}", progress)
                if p.store is None:
                    _write_new_store_files(p, info, data, seed, time.perf_counter() - t0)
    except BaseException:
        for p in todo:
            if p.tmp is not None:
                shutil.rmtree(p.tmp, ignore_errors=True)
        raise
    with writing_to(lab.activations):
        for p in todo:  # phase 3: publish
            if p.store is None:
                publish_folder(p.tmp, p.final)
            else:
                for s in p.missing:
                    os.replace(p.tmp / site_file(*s), p.final / site_file(*s))
                meta = dict(p.store.meta)
                meta["sites"] = {**meta["sites"], **p.stats}
                write_json_atomic(p.final / "meta.json", meta)
                shutil.rmtree(p.tmp, ignore_errors=True)
    return {p.domain.name: ActivationStore.open(p.final) for p in plans}


def collect_domain(lab: Lab, info: ModelInfo, device: torch.device, domain: DomainSpec, data: DataConfig, seed: int,
                   sites: list[Site], progress: bool = True) -> ActivationStore:
    return collect_domains(lab, info, device, [domain], data, seed, sites, progress)[domain.name]


def _write_new_store_files(p: _Plan, info: ModelInfo, data: DataConfig, seed: int, seconds: float) -> None:
    seqs = p.seqs
    np.save(p.tmp / "tokens.npy", seqs.tokens)
    seq_idx, pos_idx = np.nonzero(seqs.keep)
    np.save(p.tmp / "rows.npy", np.stack([seq_idx, pos_idx], 1).astype(np.int32))
    n_train_seq = len(seqs.tokens) - seqs.n_val
    meta = {
        "key": p.key,
        "material": store_material(info, p.domain, data, seed),
        "model": info.name,
        "model_identity": info.identity,
        "domain": p.domain.name,
        "source": p.domain.source,
        "seq_len": data.seq_len,
        "seed": seed,
        "n_sequences": int(len(seqs.tokens)),
        "n_val_sequences": int(seqs.n_val),
        "n_rows": int(seqs.n_rows),
        "val_start_row": int(seqs.keep[:n_train_seq].sum()),
        "d_model": info.d_model,
        "sites": p.stats,
        "collect_seconds": round(seconds, 2),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    write_json_atomic(p.tmp / "meta.json", meta)


def _keep_from_rows(store: ActivationStore, shape: tuple[int, int]) -> np.ndarray:
    keep = np.zeros(shape, dtype=bool)
    rows = store.rows()
    keep[rows[:, 0], rows[:, 1]] = True
    return keep


def collect_timed_per_layer(loaded: LoadedModel, seqs: Sequences, sites: list[Site], batch_size: int) -> float:
    """Seconds to collect ``sites`` with one pass *per site* (the naive way), for the benchmark."""
    t0 = time.perf_counter()
    for s in sites:
        _forward_batches(loaded, seqs, [s], batch_size, lambda *_: None, "", False)
    return time.perf_counter() - t0


def collect_timed_one_pass(loaded: LoadedModel, seqs: Sequences, sites: list[Site], batch_size: int) -> float:
    t0 = time.perf_counter()
    _forward_batches(loaded, seqs, sites, batch_size, lambda *_: None, "", False)
    return time.perf_counter() - t0


