"""``run_intervention(lab, spec)``: run an edit, measure what changes, store it, return it.

See ``engine.interventions.edit`` for the splice and ``engine.interventions.effects`` for the
formulas. The result keeps the spec that produced it; ``InterventionResult.evidence()`` is the
plain dict a findings card attaches.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from engine.interventions.edit import EditTrace, edited
from engine.interventions.effects import (
    cosine_shift,
    embedding_delta,
    kl_per_position,
    logit_delta,
    neighbour_ranks,
    token_movers,
)
from engine.interventions.session import Batch, RunSession, get_session, torch_threads
from engine.interventions.spec import Edit, InterventionOptions, InterventionSpec
from core.lab import Lab


@dataclass
class Generation:
    """Greedy (or seeded sampled) continuations of the text, clean and edited, side by side."""

    prompt: str
    n_new_tokens: int
    sampled: bool
    seed: int
    temperature: float
    clean_text: str
    edited_text: str
    clean_tokens: list[str]
    edited_tokens: list[str]
    first_divergence: int | None  # index of the first generated token that differs; None when identical


@dataclass
class InterventionResult:
    intervention_id: str
    run_id: str
    spec: dict[str, Any]
    model_kind: str  # causal | encoder
    input_kind: str  # text | corpus
    n_tokens: int
    n_edited_positions: int
    feature_acts: dict[str, dict[str, Any]]  # per edited feature: where it fired on the input (clean)
    tokens: list[str] = field(default_factory=list)  # text input: the tokens the model saw
    edited_mask: list[bool] = field(default_factory=list)  # text input: which of them were edited
    kl_mean: float | None = None
    kl_max: float | None = None
    kl_per_position: list[float] | None = None
    cosine_shift: float | None = None
    shift_per_position: list[float] | None = None  # encoders, text: 1 - cos of each token's final hidden state
    per_sequence: list[float] | None = None  # corpus input: the headline effect per sequence
    delta_ce: dict[str, dict[str, float]] | None = None
    token_source: str = ""  # logits (causal LMs) | embedding (encoders, through the tied word embeddings)
    token_movers: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"up": [], "down": []})
    generation: Generation | None = None
    neighbours: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    created_at: str = ""
    stored: bool = False

    @property
    def edits(self) -> list[dict[str, Any]]:
        return list(self.spec.get("edits", []))

    @property
    def effect(self) -> float | None:
        """The headline effect: mean KL (causal LMs) or the cosine shift (encoders)."""
        return self.kl_mean if self.model_kind == "causal" else self.cosine_shift

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        return summary_line(self.spec, self.model_kind, self.input_kind, self.n_edited_positions, self.kl_mean, self.kl_max,
                            self.cosine_shift)

    def evidence(self) -> dict[str, Any]:
        """A compact, JSON-ready record of this intervention for a findings card."""
        nb = self.neighbours or {}
        g = self.generation
        return evidence_record(
            intervention_id=self.intervention_id, run_id=self.run_id, spec=self.spec, model_kind=self.model_kind,
            input_kind=self.input_kind, n_edited_positions=self.n_edited_positions, kl_mean=self.kl_mean, kl_max=self.kl_max,
            cosine_shift=self.cosine_shift, delta_ce=self.delta_ce, neighbour_overlap=nb.get("overlap"),
            neighbour_spearman=nb.get("spearman"), feature_acts=self.feature_acts, token_source=self.token_source,
            token_movers=self.token_movers, created_at=self.created_at,
            generation=None if g is None else {"clean": g.clean_text, "edited": g.edited_text, "sampled": g.sampled, "seed": g.seed})


def summary_line(spec: dict[str, Any], model_kind: str, input_kind: str, n_edited: int, kl_mean: float | None,
                 kl_max: float | None, cos_shift: float | None) -> str:
    """One line naming the edit, the input and the headline effect with its formula."""
    s = InterventionSpec.from_dict(spec)
    if model_kind == "causal":
        head = f"KL {kl_mean:.3g} nats (mean over {n_edited} edited positions of KL(p_clean || p_edited), max {kl_max:.3g})"
    else:
        head = f"cosine shift {cos_shift:.3g} (1 - cos of the mean-pooled embedding)"
    where = "the text" if input_kind == "text" else f"{len(s.sequences)} {s.domain} sequences"
    return f"{s.describe()} on {where}: {head}"


def evidence_record(*, intervention_id: str, run_id: str, spec: dict[str, Any], model_kind: str, input_kind: str,
                    n_edited_positions: int, kl_mean: float | None, kl_max: float | None, cosine_shift: float | None,
                    delta_ce: dict[str, dict[str, float]] | None, neighbour_overlap: float | None,
                    neighbour_spearman: float | None, feature_acts: dict[str, Any], token_source: str,
                    token_movers: dict[str, list[dict[str, Any]]], created_at: str,
                    generation: dict[str, Any] | None) -> dict[str, Any]:
    """The plain dict a findings card keeps as evidence (from a fresh result or a stored row):
    ``findings.attach_evidence(lab, card_id, "intervention", result.evidence())``."""
    ev: dict[str, Any] = {
        "kind": "intervention", "intervention_id": intervention_id, "run_id": run_id,
        "feature": int(spec["edits"][0]["feature"]) if len(spec.get("edits", [])) == 1 else None,  # the card links one feature
        "edits": list(spec.get("edits", [])),
        "input": spec.get("text") if input_kind == "text" else {"domain": spec.get("domain"), "sequences": list(spec.get("sequences") or [])},
        "summary": summary_line(spec, model_kind, input_kind, n_edited_positions, kl_mean, kl_max, cosine_shift),
        "model_kind": model_kind,
        "metrics": {"kl_mean": kl_mean, "kl_max": kl_max, "cosine_shift": cosine_shift,
                    "delta_ce": None if delta_ce is None else {d: v["delta_ce"] for d, v in delta_ce.items()},
                    "neighbour_overlap": neighbour_overlap, "neighbour_spearman": neighbour_spearman},
        "feature_acts": feature_acts, "token_source": token_source,
        "tokens_up": [m["token"] for m in token_movers.get("up", [])],
        "tokens_down": [m["token"] for m in token_movers.get("down", [])],
        "created_at": created_at,
    }
    if generation is not None:
        ev["generation"] = generation
    return ev


def new_intervention_id() -> str:
    return f"iv-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def run_intervention(lab: Lab, spec: InterventionSpec, store: bool = True, device: str | torch.device | None = None) -> InterventionResult:
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
        from engine.interventions.store import save_result

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
    res.token_movers = token_movers(embedding_delta(clean, new, batch.keep, session.embedding_matrix()), session.vocab, opts.top_tokens)
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

