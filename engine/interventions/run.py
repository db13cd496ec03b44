"""``run_intervention(lab, spec)``: run an edit, measure what changes, store it, return it.

See ``engine.interventions.edit`` for the splice and ``engine.interventions.effects`` for the
formulas. The result keeps the spec that produced it; ``InterventionResult.evidence()`` is the
plain dict a findings card attaches.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Any

import torch

from core.lab import Lab
from engine.interventions.edit import EditTrace, edited
from engine.interventions.effects import (
    cosine_shift,
    embedding_delta,
    kl_per_position,
    logit_delta,
    neighbour_ranks,
    token_movers,
)
from engine.interventions.results import Generation, InterventionResult
from engine.interventions.session import Batch, RunSession, get_session, torch_threads
from engine.interventions.spec import Edit, InterventionOptions, InterventionSpec
from engine.interventions.store import save_result


def new_intervention_id() -> str:
    return f"iv-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def run_intervention(lab: Lab, spec: InterventionSpec, store: bool = True,
                     device: str | torch.device | None = None) -> InterventionResult:
    """Run ``spec`` on its run's model (loaded once per process), measure, store (unless
    ``store=False``) and return the result. Bad input raises ``LabError`` before any forward pass."""
    t0 = time.perf_counter()
    if not isinstance(spec, InterventionSpec):
        spec = InterventionSpec.from_dict(spec, "intervention")
    spec.validate()  # input checks that need no model
    session = get_session(lab, spec.run_id, device)
    spec.validate(session.sae.d_sae)
    batch = _input_batch(session, spec)  # a text too long for the model fails here, before any forward
    with session.lock:
        _warm(session, spec)  # clean references, computed once per session with every thread
        # One short text is a few dozen tokens: on this 2-core machine, with other jobs running, two
        # threads made a MiniLM forward ~15x slower than one (0.24 s vs 0.015 s, measured).
        with torch_threads(1 if spec.text is not None else None):
            result = _measure(session, spec, batch)
    result.seconds = time.perf_counter() - t0
    if store:
        save_result(lab, result)
        result.stored = True
        result.seconds = time.perf_counter() - t0
    return result


def intervene(lab: Lab, run_id: str, feature: int, op: str = "zero", value: float | None = None, text: str = "",
              store: bool = True, **options: Any) -> InterventionResult:
    """One edit of one feature on one text: ``intervene(lab, run, 12, "scale", 4.0, "def f(x):")``.
    Keyword options are InterventionOptions fields (generate_tokens=0 skips generation)."""
    spec = InterventionSpec(run_id, [Edit(feature, op, value)], text=text,
                            options=InterventionOptions.from_dict(options, "options"))
    return run_intervention(lab, spec, store=store)


def prepare_run(lab: Lab, run_id: str, options: InterventionOptions | None = None,
                device: str | torch.device | None = None) -> RunSession:
    """Load a run's model and SAE and compute its clean references now (the app can call this
    when a run is opened, so the first intervention is as fast as the next ones)."""
    session = get_session(lab, run_id, device)
    with session.lock:
        _warm(session, InterventionSpec(run_id, [], text="warm", options=options or InterventionOptions()))
    return session


def _warm(session: RunSession, spec: InterventionSpec) -> None:
    o = spec.options
    if session.is_causal and o.ce_sequences > 0:
        for domain in session.stores:
            session.ce_clean(domain, o.ce_sequences)
    if not session.is_causal and spec.text is not None and o.neighbour_corpus > 0:
        session.corpus_embeddings(o.neighbour_corpus)


# -- measuring ---------------------------------------------------------------------------------------
def _input_batch(session: RunSession, spec: InterventionSpec) -> Batch:
    if spec.text is not None:
        extra = spec.options.generate_tokens if session.is_causal else 0
        return session.text_batch(session.text_ids(spec.text, extra))
    return session.corpus_batch(spec.domain, spec.sequences)


def _measure(session: RunSession, spec: InterventionSpec, batch: Batch) -> InterventionResult:
    edits = spec.edits
    trace = EditTrace()
    clean = session.forward(batch, None)
    new = session.forward(batch, edits, trace)
    res = InterventionResult(
        intervention_id=new_intervention_id(), run_id=spec.run_id, spec=spec.to_dict(), model_kind=session.kind,
        input_kind=spec.input_kind, n_tokens=int(batch.ids.numel()), n_edited_positions=int(batch.keep.sum()),
        feature_acts={str(j): v for j, v in trace.summary().items()},
        created_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
    )
    if spec.text is not None:
        res.tokens = [session.vocab.text(int(t)) for t in batch.ids[0].tolist()]
        res.edited_mask = [bool(k) for k in batch.keep[0].tolist()]
    if session.is_causal:
        _causal_effects(session, spec, batch, clean, new, res)
    else:
        _encoder_effects(session, spec, batch, clean, new, res)
    res.notes += _notes(session, spec, res, batch)
    return res


def _causal_effects(session: RunSession, spec: InterventionSpec, batch: Batch, clean: torch.Tensor, new: torch.Tensor,
                    res: InterventionResult) -> None:
    opts = spec.options
    kl = kl_per_position(clean, new)  # [B, L]
    sel = kl[batch.keep] if bool(batch.keep.any()) else kl.reshape(-1)
    res.kl_mean = float(sel.mean())
    res.kl_max = float(sel.max())
    if spec.text is not None:
        res.kl_per_position = [float(v) for v in kl[0].tolist()]
    else:
        res.per_sequence = [float(kl[i][batch.keep[i]].mean()) if bool(batch.keep[i].any()) else 0.0 for i in range(len(kl))]
    res.token_source = "logits"
    res.token_movers = token_movers(logit_delta(clean, new, batch.keep), session.vocab, opts.top_tokens)
    if opts.ce_sequences > 0:
        res.delta_ce = {}
        for domain in session.stores:
            seqs, ce_c, n = session.ce_clean(domain, opts.ce_sequences)
            ce_e, _ = session.corpus_ce(domain, seqs, spec.edits)
            res.delta_ce[domain] = {"ce_clean": ce_c, "ce_edited": ce_e, "delta_ce": ce_e - ce_c, "n_sequences": len(seqs),
                                    "n_tokens": n}
    if spec.text is not None and opts.generate_tokens > 0:
        res.generation = _generate_pair(session, spec, batch.ids[0].tolist())


def _encoder_effects(session: RunSession, spec: InterventionSpec, batch: Batch, clean: torch.Tensor, new: torch.Tensor,
                     res: InterventionResult) -> None:
    opts = spec.options
    pc, pe = session.pooled(clean, batch), session.pooled(new, batch)
    shift = cosine_shift(pc, pe)  # [B]
    res.cosine_shift = float(shift.mean())
    if spec.text is not None:
        res.shift_per_position = [float(v) for v in cosine_shift(clean[0], new[0]).tolist()]
    else:
        res.per_sequence = [float(v) for v in shift.tolist()]
    res.token_source = "embedding"
    res.token_movers = token_movers(embedding_delta(clean, new, batch.keep, session.embedding_matrix()),
                                    session.vocab, opts.top_tokens)
    if spec.text is not None and opts.neighbour_corpus > 0:
        corpus = session.corpus_embeddings(opts.neighbour_corpus)
        res.neighbours = neighbour_ranks(pc[0], pe[0], corpus["emb"], corpus["meta"], opts.neighbour_top, opts.neighbour_moves)


@torch.inference_mode()
def generate_ids(session: RunSession, prompt: list[int], n: int, edits: list[Edit] | None, sample: bool = False,
                 seed: int = 0, temperature: float = 1.0) -> list[int]:
    """n new tokens after ``prompt``, the edit applied at every step (to each new ordinary token,
    the prompt's included); greedy, or sampled from a torch.Generator seeded with ``seed``."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    model = session.loaded.model
    cur = torch.tensor([prompt], dtype=torch.long, device=session.device)
    past = None
    out: list[int] = []
    for _ in range(n):
        with edited(session.module, session.sae, session.keep_of(cur), edits):
            o = model(input_ids=cur, past_key_values=past, use_cache=True)
        past = o.past_key_values
        logits = o.logits[0, -1].float().cpu()
        if sample:
            probs = torch.softmax(logits / temperature, -1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        else:
            nxt = int(logits.argmax())
        out.append(nxt)
        cur = torch.tensor([[nxt]], dtype=torch.long, device=session.device)
    return out


def _generate_pair(session: RunSession, spec: InterventionSpec, prompt: list[int]) -> Generation:
    o = spec.options
    a = generate_ids(session, prompt, o.generate_tokens, None, o.sample, o.seed, o.temperature)
    b = generate_ids(session, prompt, o.generate_tokens, spec.edits, o.sample, o.seed, o.temperature)
    tok = session.loaded.tokenizer
    diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return Generation(
        prompt=spec.text or "", n_new_tokens=o.generate_tokens, sampled=o.sample, seed=o.seed, temperature=o.temperature,
        clean_text=tok.decode(a), edited_text=tok.decode(b),
        clean_tokens=[session.vocab.text(t) for t in a], edited_tokens=[session.vocab.text(t) for t in b], first_divergence=diff,
    )


def _notes(session: RunSession, spec: InterventionSpec, res: InterventionResult, batch: Batch) -> list[str]:
    notes = []
    for e in spec.edits:
        fired = res.feature_acts.get(str(e.feature), {}).get("fired_positions", 0)
        if e.op in ("zero", "scale") and fired == 0:
            notes.append(f"feature {e.feature} does not fire on this input: {e.op} leaves it unchanged here "
                         "(try clamp, or a text from the feature's top contexts)")
    if spec.text is not None and batch.ids.shape[1] > session.config.data.seq_len:
        notes.append(f"the text ({batch.ids.shape[1]} tokens) is longer than the {session.config.data.seq_len}-token "
                     "windows the SAE was trained on: positions past that are outside its training distribution")
    dead = session.dead_features()
    for e in spec.edits:
        if e.feature in dead:
            notes.append(f"feature {e.feature} is dead (it never fired on the run's corpora in the analysis)"
                         + ("" if e.op == "clamp" else ": zero and scale cannot change anything with it"))
    if not bool(batch.keep.any()):
        notes.append("no position of this input is edited (it holds only special tokens)")
    return notes

