"""The concept evaluation of one run: memberships of its activation sets (cached), then the scores.

Called by ``engine.analysis.analyze.analyze_run`` after the one sparse encoding of every token,
so it costs only the evaluation itself once the memberships are cached: the first analysis of
an activation set rebuilds its text (seconds, once per lab), later ones read a few megabytes.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.errors import LabError
from core.lab import Lab
from engine.analysis.codes import RunData
from engine.analysis.concepts.evaluate import BASELINES, BaselineCache, ConceptResult, DomainInput, coverage, evaluate_concepts
from engine.analysis.concepts.members import Memberships, cache_key, memberships
from engine.analysis.concepts.registry import REGISTRY, ConceptRegistry, domain_kind
from engine.analysis.concepts.texts import StoreText, load_store_text
from engine.collection.store import ActivationStore, site_file


@dataclass
class ConceptReport:
    results: list[ConceptResult]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _tokenizer_loader(model_path: str, local_only: bool) -> Callable[[], Any]:
    cache: list[Any] = []

    def get() -> Any:
        if not cache:
            # deferred: transformers is heavy and only needed when the memberships are not cached
            from transformers import AutoTokenizer

            cache.append(AutoTokenizer.from_pretrained(model_path, local_files_only=local_only))
        return cache[0]

    return get


def run_memberships(lab: Lab, data: RunData, registry: ConceptRegistry = REGISTRY,
                    tokenizer: Callable[[], Any] | None = None) -> tuple[list[tuple[str, Memberships | None]], list[str], str]:
    """(kind, memberships or None) per domain of the run, in its order; notes on what is missing; the
    memberships' cache key (it names the activation sets, their kinds and the concepts)."""
    # deferred: the model registry loads transformers
    from engine.collection.models import resolve_model

    if tokenizer is None:
        info = resolve_model(data.config.model)
        tokenizer = _tokenizer_loader(info.path, info.local_files_only)
    stores = [ActivationStore.open(lab.activations / dc.store_key) for dc in data.domains]
    spec = {d.name: d for d in data.config.data.domains}
    kinds = [domain_kind(spec[dc.name].source if dc.name in spec else s.meta.get("source", ""), dc.name)
             for dc, s in zip(data.domains, stores)]
    key = cache_key(registry, [(s.key, k) for s, k in zip(stores, kinds)])
    paths = [s.path / f"concepts-{key}.npz" for s in stores]
    cached = [Memberships.load(p) if p.exists() else None for p in paths]
    names = [c.name for c in registry.concepts]
    if all(m is not None and m.names == names and len(m.member) == s.n_rows for m, s in zip(cached, stores)):
        return list(zip(kinds, cached)), [], key
    notes: list[str] = []
    texts: list[StoreText | None] = []
    for dc, s in zip(data.domains, stores):
        try:
            t = load_store_text(s, tokenizer())
        except LabError as e:
            notes.append(f"no concepts on {dc.name}: {e}")
            t = None
        if t is not None and len(t.bad_sequences):
            notes.append(f"{dc.name}: {len(t.bad_sequences)} of {t.n_sequences} sequences could not be matched to their text "
                         "(corpus or tokenizer changed since collection) and are left out of the concepts")
        texts.append(t)
    docs_by_kind: dict[str, list[str]] = {}
    for k, t in zip(kinds, texts):
        if t is not None:
            docs_by_kind.setdefault(k, []).extend(t.docs)
    states = registry.prepare(docs_by_kind)
    out: list[tuple[str, Memberships | None]] = []
    for k, t, p in zip(kinds, texts, paths):
        if t is None:
            out.append((k, None))
            continue
        m = memberships(t, k, registry, states)
        try:
            m.save(p)
        except OSError:
            pass
        out.append((k, m))
    return out, notes, key


def _file_identity(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path}:missing"
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def evaluate_run(lab: Lab, data: RunData, registry: ConceptRegistry = REGISTRY, seed: int = 0,
                 progress: bool = False, baselines: BaselineCache = BASELINES) -> ConceptReport:
    """Every concept of the registry scored on the run's held-out tokens."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    members, notes, members_key = run_memberships(lab, data, registry)
    timings["concepts_members"] = round(time.perf_counter() - t0, 3)
    inputs = [DomainInput(dc.name, kind, dc, m,
                          ActivationStore.open(lab.activations / dc.store_key).acts(data.config.hook, data.config.layer))
              for dc, (kind, m) in zip(data.domains, members)]
    # The model-dims baseline depends only on these activations and memberships: runs that share them
    # (a sweep's runs of one layer) share it (``BASELINES``). The key names each site file by path, size
    # and modification time, so a lab elsewhere or a collection redone never reads another's numbers.
    baseline_key = "|".join([members_key, data.config.hook, str(data.config.layer),
                             *(_file_identity(lab.activations / dc.store_key / site_file(data.config.hook, data.config.layer))
                               for dc in data.domains)])
    results = evaluate_concepts(inputs, registry.concepts, data.d_sae, seed, timings, baseline_key, baselines)
    summary = coverage(results)
    for n in notes:
        if progress:
            print(f"run {data.run_id}: concepts: {n}", file=sys.stderr)
    return ConceptReport(results, summary, notes, timings)
