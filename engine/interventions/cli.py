"""CLI commands of the interventions: intervene, interventions, ablation-specificity.

Registered on the engine's parser by ``add_intervention_commands(subparsers)``; each command is a
``fn(args, lab) -> int`` like the engine's own.
"""

from __future__ import annotations

import json

from core.errors import LabError
from engine.cli_args import float_arg, int_arg
from engine.interventions.queries import interventions_for_feature, list_interventions
from engine.interventions.spec import Edit, InterventionOptions, InterventionSpec
from engine.tables import format_table


def add_intervention_commands(sub) -> None:
    s = sub.add_parser("intervene", help="zero, scale or clamp a feature inside the model and print what changes")
    s.add_argument("--run", required=True, help="run id")
    s.add_argument("--feature", required=True, type=int_arg, help="the feature to edit")
    op = s.add_mutually_exclusive_group(required=True)
    op.add_argument("--zero", action="store_true", help="set the feature to 0 where it fires (ablation)")
    op.add_argument("--scale", type=float_arg, metavar="S", help="multiply the feature's activation by S")
    op.add_argument("--clamp", type=float_arg, metavar="C", help="set the feature's activation to C at every token")
    s.add_argument("--text", help="the text to run (or --domain and --seqs for stored corpus sequences)")
    s.add_argument("--domain", help="corpus input: a domain of the run")
    s.add_argument("--seqs", help="corpus input: comma-separated sequence indices, e.g. 3,17")
    s.add_argument("--generate", type=int_arg, default=16, metavar="N",
                   help="causal LMs: tokens generated with and without the edit (0: none)")
    s.add_argument("--sample", action="store_true", help="sample the generations (same seed both sides) instead of greedy")
    s.add_argument("--seed", type=int_arg, default=0, help="seed of sampled generation")
    s.add_argument("--no-store", action="store_true", help="do not record the result in the lab database")
    s.add_argument("--json", action="store_true", help="print the whole result as JSON")
    s.set_defaults(fn=cmd_intervene)

    s = sub.add_parser("interventions", help="stored interventions of a run (or of one feature)")
    s.add_argument("--run", help="run id")
    s.add_argument("--feature", type=int_arg, help="only interventions that edited this feature (needs --run)")
    s.add_argument("-n", type=int_arg, default=20, help="how many, newest first")
    s.set_defaults(fn=cmd_interventions, read_only=True)

    s = sub.add_parser("ablation-specificity",
                       help="does ablating a feature change the output more on its own top contexts than on random ones, "
                            "and more than ablating a matched control feature?")
    s.add_argument("--run", required=True, help="run id (needs its feature analysis)")
    s.add_argument("--features", type=int_arg, default=50, help="features compared (drawn at random)")
    s.add_argument("--contexts", type=int_arg, default=8, help="sequences per condition and feature")
    s.add_argument("--candidates", type=int_arg, default=10, help="the control is drawn among this many frequency neighbours")
    s.add_argument("--seed", type=int_arg, default=0)
    s.add_argument("--threads", type=int_arg,
                   help="torch threads for the study (default: torch's; 1 is faster on a busy small machine)")
    s.add_argument("--no-store", action="store_true", help="do not record the study in the lab database")
    s.add_argument("--json", action="store_true", help="print the whole result as JSON")
    s.set_defaults(fn=cmd_ablation_specificity)


def _spec_from_args(args):
    if args.zero:
        edit = Edit(args.feature, "zero")
    elif args.scale is not None:
        edit = Edit(args.feature, "scale", args.scale)
    else:
        edit = Edit(args.feature, "clamp", args.clamp)
    seqs: list[int] = []
    if args.seqs:
        try:
            seqs = [int(x) for x in args.seqs.split(",") if x.strip()]
        except ValueError:
            raise LabError(f"--seqs '{args.seqs}' must be comma-separated sequence numbers, e.g. 3,17") from None
    if args.text is None and not args.domain and not seqs:
        raise LabError("nothing to run the edit on: give --text \"...\" (or --domain D --seqs 3,17 for corpus sequences)")
    opts = InterventionOptions(generate_tokens=args.generate, sample=args.sample, seed=args.seed)
    return InterventionSpec(args.run, [edit], text=args.text, domain=args.domain, sequences=seqs, options=opts)


def cmd_intervene(args, lab) -> int:
    # deferred: torch and the model code; the engine's parser (every command) must not load them
    from engine.interventions.run import run_intervention

    res = run_intervention(lab, _spec_from_args(args), store=not args.no_store)
    if args.json:
        print(json.dumps(res.to_dict(), default=str))
        return 0
    print(res.summary_line())
    for j, a in res.feature_acts.items():
        mean = f"{a['mean_act_when_fired']:.3f}" if a["mean_act_when_fired"] is not None else "-"
        print(f"  feature {j} fires on {a['fired_positions']} of {res.n_edited_positions} edited positions (max "
              f"{a['max_act']:.3f}, mean {mean})")
    if res.tokens:
        per = res.kl_per_position if res.model_kind == "causal" else res.shift_per_position
        label = "KL(next token)" if res.model_kind == "causal" else "1 - cos(token state)"
        print(f"  per token, {label}:  " + "  ".join(
            f"{t}{'' if m else '*'} {v:.2g}" for t, m, v in zip(res.tokens, res.edited_mask, per or [])) + "   (* = not edited)")
    if res.per_sequence:
        print("  per sequence: " + ", ".join(f"{s}: {v:.3g}" for s, v in zip(res.spec["sequences"], res.per_sequence)))
    src = "mean logit change" if res.token_source == "logits" else "hidden-state change read through the word embeddings"
    for direction in ("up", "down"):
        movers = res.token_movers.get(direction, [])
        if movers:
            print(f"  pushed {direction} ({src}): " + ", ".join(f"{m['token']} {m['delta']:+.3g}" for m in movers))
    for domain, ce in (res.delta_ce or {}).items():
        print(f"  CE on {ce['n_sequences']} held-out {domain} sequences: {ce['ce_clean']:.4f} -> {ce['ce_edited']:.4f} "
              f"(delta {ce['delta_ce']:+.4f} nats/token)")
    g = res.generation
    if g is not None:
        how = f"sampled, seed {g.seed}, T={g.temperature:g}" if g.sampled else "greedy"
        print(f"  generation ({g.n_new_tokens} tokens, {how}):")
        print(f"    clean : {g.clean_text!r}")
        print(f"    edited: {g.edited_text!r}")
        print(f"    {'identical' if g.first_divergence is None else f'first differs at token {g.first_divergence}'}")
    nb = res.neighbours
    if nb and nb["n_corpus"]:
        print(f"  nearest of {nb['n_corpus']} held-out corpus sequences: top-{nb['top_k']} overlap {nb['overlap']:.0%}, "
              f"Spearman of similarities {nb['spearman']:.4f}")
        for kind in ("moved_closer", "moved_away"):
            for r in [r for r in nb["rows"] if r["kind"] == kind][:3]:
                print(f"    {kind.replace('_', ' ')}: rank {r['rank_clean']} -> {r['rank_edited']}  [{r['domain']}:{r['seq']}] "
                      f"{r['text'][:70]!r}")
    for note in res.notes:
        print(f"  note: {note}")
    if res.stored:
        print(f"  stored as {res.intervention_id} ({res.seconds:.2f} s)")
    return 0


def cmd_interventions(args, lab) -> int:
    if args.feature is not None:
        if not args.run:
            raise LabError("--feature needs --run: interventions --run RUN --feature F")
        df = interventions_for_feature(lab, args.run, args.feature, args.n)
    else:
        df = list_interventions(lab, args.run, args.n)
    if df.empty:
        print("no interventions stored yet: run python -m engine intervene --run RUN --feature F --zero --text \"...\"")
        return 0
    cols = ["intervention_id", "run_id", "edits", "input_kind", "kl_mean", "cosine_shift", "created_at"]
    print(format_table(df[cols]))
    return 0


def cmd_ablation_specificity(args, lab) -> int:
    # deferred: torch and the model code, as above
    from engine.interventions.specificity import ablation_specificity

    res = ablation_specificity(lab, args.run, args.features, args.contexts, args.seed, n_candidates=args.candidates,
                               store=not args.no_store, progress=not args.quiet and not args.json, threads=args.threads)
    if args.json:
        print(json.dumps(res.to_dict(), default=str))
        return 0
    for line in res.summary_lines():
        print(line)
    print(f"  claim tested: {res.claim}")
    print(f"  {res.seconds:.1f} s" + (f"; stored as {res.study_id}" if res.stored else ""))
    return 0
