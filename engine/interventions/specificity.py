"""Ablation specificity: does zeroing a feature matter where the feature fires, and more than
zeroing another feature would?

``ablation_specificity(lab, run_id, n_features, n_contexts, seed)`` tests this claim, stated as
the figures it reports:

    For N features drawn at random (seed) among the run's live features that have at least
    ``n_contexts`` distinct top-context sequences in the feature analysis, let
      own_j     = mean effect of zero-ablating j on the n_contexts sequences holding j's
                  strongest activations (its top contexts, all domains, strongest first);
      random_j  = mean effect of zero-ablating j on n_contexts sequences drawn at random from a
                  pool of max(8·n_contexts, 64) sequences drawn uniformly from all of the run's
                  stored sequences (all domains, train and held-out), none of them j's own;
      control_j = mean effect of zero-ablating c(j) on j's own sequences, c(j) drawn among the
                  ``n_candidates`` live features nearest to j in log firing frequency (c(j) != j).
    The effect of a sequence is the mean next-token KL(p_clean ‖ p_edited) over its edited
    positions (causal LMs) or 1 − cos of its mean-pooled embedding (encoders).
    Claim: own_j > random_j and own_j > control_j for most features. Reported: the share of
    features for which each inequality holds, and one-sided Wilcoxon signed-rank p-values over
    the N features (H1: the paired difference own − other is > 0).

What it does and does not show: zero-ablating a feature that does not fire on a sequence changes
nothing by construction (the splice is exact), so part of the random-context and control gap is
"the feature is not there"; ``random_fire_share`` and ``control_fire_share`` say how often it was.
The comparison with the control says that the effect on j's contexts belongs to j, not to
ablating *some* feature of the same frequency there.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Any

import numpy as np
import torch

from core.errors import LabError
from core.lab import Lab
from db import connect
from engine.interventions.edit import EditTrace
from engine.interventions.effects import cosine_shift
from engine.interventions.results import SpecificityResult, wilcoxon_greater
from engine.interventions.session import Batch, RunSession, get_session, torch_threads
from engine.interventions.spec import Edit
from engine.interventions.store import save_specificity


def ablation_specificity(lab: Lab, run_id: str, n_features: int = 50, n_contexts: int = 8, seed: int = 0, *,
                         n_candidates: int = 10, store: bool = True, progress: bool = False,
                         device: str | torch.device | None = None, threads: int | None = None) -> SpecificityResult:
    """Compare own-context, random-context and matched-control ablation effects (module docstring).

    ``threads`` sets torch's intra-op threads for the study (None: leave them); on a small shared
    machine one thread can be several times faster than two fighting over the cores."""
    if n_features < 5:
        raise LabError(f"n_features = {n_features} is too few for a paired test: use 5 or more")
    if n_contexts < 1:
        raise LabError(f"n_contexts = {n_contexts} must be at least 1")
    if n_candidates < 1:
        raise LabError(f"n_candidates = {n_candidates} must be at least 1")
    t0 = time.perf_counter()
    session = get_session(lab, run_id, device)
    freq, live, own = _analysis(lab, session, n_contexts)
    eligible = np.array(sorted(j for j in own if len(own[j]) >= n_contexts and live[j]), dtype=np.int64)
    if len(eligible) < 5:
        raise LabError(f"run '{run_id}' has only {len(eligible)} live features with {n_contexts} distinct top-context sequences: "
                       "lower n_contexts, or analyse a run trained on more text")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible, size=min(n_features, len(eligible)), replace=False))
    live_ids = np.nonzero(live)[0]
    logf = np.log(np.maximum(freq, 1e-12))
    # Random contexts come from one pool of sequences drawn uniformly from every stored sequence of
    # the run: their clean references are computed once, not once per feature.
    every = [(d, s) for d, st in session.stores.items() for s in range(int(st.meta["n_sequences"]))]
    pool = [every[i] for i in rng.choice(len(every), size=min(len(every), max(8 * n_contexts, 64)), replace=False)]
    refs = _References(session)
    rows = []
    with session.lock, torch_threads(threads):
        for n, j in enumerate(chosen.tolist()):
            cands = live_ids[live_ids != j]
            near = cands[np.argsort(np.abs(logf[cands] - logf[j]), kind="stable")[:n_candidates]]
            c = int(rng.choice(near))
            own_pairs = own[j][:n_contexts]
            own_set = set(own_pairs)
            rest = [p for p in pool if p not in own_set]
            rand_pairs = [rest[i] for i in rng.choice(len(rest), size=min(n_contexts, len(rest)), replace=False)]
            ob = session.pairs_batch(own_pairs)
            ref_o = refs.of(ob, session.forward(ob, None))  # own contexts: used twice, never again
            e_own, _ = refs.effect(ob, ref_o, j)
            e_ctl, fired_ctl = refs.effect(ob, ref_o, c)
            del ref_o
            rb = session.pairs_batch(rand_pairs)
            e_rand, fired_rand = refs.effect(rb, refs.cached(rand_pairs, rb), j)
            rows.append({"feature": j, "freq": float(freq[j]), "control_feature": c, "control_freq": float(freq[c]),
                         "own_effect": float(e_own.mean()), "random_effect": float(e_rand.mean()),
                         "control_effect": float(e_ctl.mean()), "own_sequences": [f"{d}:{s}" for d, s in own_pairs],
                         "random_fired": int(fired_rand.sum()), "control_fired": int(fired_ctl.sum())})
            if progress:
                r = rows[-1]
                print(f"  [{n + 1}/{len(chosen)}] #{j}: own {r['own_effect']:.4g}  random {r['random_effect']:.4g}  "
                      f"control #{c} {r['control_effect']:.4g}", flush=True)
    res = _summarise(session, run_id, rows, n_contexts, n_candidates, seed, len(eligible))
    res.seconds = time.perf_counter() - t0
    if store:
        save_specificity(lab, res)
        res.stored = True
    return res


def _analysis(lab: Lab, session: RunSession, n_contexts: int) -> tuple[np.ndarray, np.ndarray, dict[int, list[tuple[str, int]]]]:
    """Per feature: firing frequency, live flag, and its distinct top-context sequences (strongest first)."""
    d_sae = session.sae.d_sae
    with connect(lab, read_only=True) as con:
        has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'analysis_runs'").fetchall()[0][0]
        feats = con.execute("SELECT feature, freq, dead FROM features WHERE run_id = ?",
                            [session.run_id]).fetchall() if has else []
        if not feats:
            raise LabError(f"run '{session.run_id}' has no feature analysis: run `python -m engine analyze {session.run_id}`")
        tops = con.execute(
            """SELECT feature, domain, activation_set, seq, max(activation) AS a FROM feature_context_rows
               WHERE run_id = ? AND kind = 'top' GROUP BY ALL ORDER BY feature, a DESC, domain, seq""",
            [session.run_id]).fetchall()
    freq = np.zeros(d_sae)
    live = np.zeros(d_sae, dtype=bool)
    for f, fr, dead in feats:
        freq[f], live[f] = fr, not dead
    keys = {d: st.key for d, st in session.stores.items()}
    own: dict[int, list[tuple[str, int]]] = {}
    for f, domain, aset, seq, _a in tops:
        if keys.get(domain) != aset:  # the context's text is not in the sets this session reads
            continue
        own.setdefault(int(f), []).append((domain, int(seq)))
    return freq, live, own


class _References:
    """Clean references of sequences and the effect of zeroing a feature against them.

    The reference of a sequence is what its effect is computed from: the mean-pooled embedding
    (encoders) or the next-token log-probabilities (causal LMs). Random-pool references are kept
    up to a memory budget (a causal LM's are [len, vocab] each: beyond it they are recomputed)."""

    BUDGET_BYTES = 512 * 2**20

    def __init__(self, session: RunSession):
        self.session = session
        self.store: dict[tuple[str, int], torch.Tensor] = {}
        self.bytes = 0

    def of(self, batch: Batch, out: torch.Tensor) -> torch.Tensor:
        s = self.session
        return torch.log_softmax(out.float(), -1) if s.is_causal else s.pooled(out, batch)

    def cached(self, pairs: list[tuple[str, int]], batch: Batch) -> torch.Tensor:
        missing = [p for p in pairs if p not in self.store]
        if missing:
            mb = self.session.pairs_batch(missing)
            ref = self.of(mb, self.session.forward(mb, None))
            if self.bytes + ref.numel() * ref.element_size() <= self.BUDGET_BYTES:
                for p, r in zip(missing, ref):
                    self.store[p] = r
                self.bytes += ref.numel() * ref.element_size()
            else:  # over budget: use it for this batch only
                got = dict(zip(missing, ref))
                return torch.stack([self.store[p] if p in self.store else got[p] for p in pairs])
        return torch.stack([self.store[p] for p in pairs])

    def effect(self, batch: Batch, ref: torch.Tensor, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """(per-sequence effect of zeroing ``feature``, per-sequence 'it fired at least once')."""
        s = self.session
        trace = EditTrace(keep_columns=True)
        new = s.forward(batch, [Edit(feature, "zero")], trace)
        if s.is_causal:
            lq = torch.log_softmax(new.float(), -1)
            kl = (ref.exp() * (ref - lq)).sum(-1).clamp_min(0.0)  # KL(p_clean || p_edited) per position
            k = batch.keep.float()
            per = (kl * k).sum(1) / k.sum(1).clamp_min(1)
        else:
            per = cosine_shift(ref, s.pooled(new, batch))
        seq_of_row = batch.keep.nonzero()[:, 0].cpu()
        fired_rows = (torch.cat(trace.columns)[:, 0] > 0).float().cpu() if trace.columns else torch.zeros(0)
        fired = torch.zeros(batch.ids.shape[0]).index_add_(0, seq_of_row, fired_rows) > 0
        return per.double().cpu().numpy(), fired.numpy()


def _summarise(session: RunSession, run_id: str, rows: list[dict[str, Any]], n_contexts: int, n_candidates: int, seed: int,
               n_eligible: int) -> SpecificityResult:
    own = np.array([r["own_effect"] for r in rows])
    rnd = np.array([r["random_effect"] for r in rows])
    ctl = np.array([r["control_effect"] for r in rows])
    n_rand = len(rows) * n_contexts  # sequences per condition over all features
    return SpecificityResult(
        study_id=f"sp-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}", run_id=run_id,
        model_kind=session.kind, metric="kl" if session.is_causal else "cosine_shift", n_contexts=n_contexts,
        n_candidates=n_candidates, seed=seed, n_eligible=n_eligible, features=rows,
        frac_own_gt_random=float(np.mean(own > rnd)), frac_own_gt_control=float(np.mean(own > ctl)),
        p_own_gt_random=wilcoxon_greater(own, rnd), p_own_gt_control=wilcoxon_greater(own, ctl),
        median_own=float(np.median(own)), median_random=float(np.median(rnd)), median_control=float(np.median(ctl)),
        random_fire_share=sum(r["random_fired"] for r in rows) / max(n_rand, 1),
        control_fire_share=sum(r["control_fired"] for r in rows) / max(n_rand, 1),
        created_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
    )
