"""CLI: ``import PATH`` (or ``--release R --sae-id S``) and ``export RUN --format F --out DIR``.

Kept light: the parser is built without torch; the readers and the evaluation are imported when a
command runs.
"""

from __future__ import annotations

import argparse

from db import query
from engine.cli_args import comma_list, float_arg, int_arg

FORMATS = ("dictionary_learning", "sparsify", "saelens")  # engine.imports.export.FORMATS, without importing torch


def _plan(args, lab):
    # deferred: the readers load torch and safetensors
    from engine.imports.conduct import plan_import

    return plan_import(lab, args.path, release_name=args.release, sae_id=args.sae_id, model=args.model, hook=args.hook,
                       layer=args.layer, norm_scaling_factor=args.norm_scaling_factor)


def cmd_import(args, lab) -> int:
    domains = comma_list("--domains", args.domains, "prose,code") if args.domains is not None else None
    plan = _plan(args, lab)
    if args.preview:
        for key, value in plan.summary().items():
            print(f"{key:>20}: {value}")
        for note in plan.notes:
            print(f"{'note':>20}: {note}")
        if plan.existing:
            print(f"{'already imported':>20}: run {plan.existing}")
        return 0
    # deferred: the evaluation and the analysis load the model code, scipy and scikit-learn
    from engine.imports.conduct import describe, import_sae

    outcome = import_sae(lab, plan, domains=domains, name=args.name, tags=args.tag, analyze=not args.no_analysis,
                         progress=not args.quiet, tokens=args.tokens)
    lines = describe(outcome)
    if not outcome.existed:
        stored = query(lab, "SELECT score, rating FROM quality_scores WHERE run_id = ?", [outcome.run_id])
        if len(stored):  # the analysis rescored it
            lines[0] = lines[0].split(", quality")[0] + f", quality {stored.iloc[0, 0]:.2f}/5 ({stored.iloc[0, 1]})"
    print("\n".join(lines))
    return 0


def cmd_export(args, lab) -> int:
    # deferred: exporting loads the run's SAE with torch
    from engine.imports.export import export_run

    out = export_run(lab, args.run_id, args.format, args.out)
    print(f"run {args.run_id} written as a {args.format} folder: {out}")
    return 0


def add_import_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("import", help="import an SAE trained elsewhere (SAELens, sparsify, dictionary_learning folder, or a "
                                      "SAELens release): evaluated and analysed like a trained run")
    s.add_argument("path", nargs="?", help="the SAE's folder (or a sparsify run folder holding one sub-folder per hookpoint)")
    s.add_argument("--release", help="a SAELens pretrained release (needs the Hugging Face Hub), with --sae-id")
    s.add_argument("--sae-id", dest="sae_id", help="the SAE's id within --release")
    s.add_argument("--model", help="the model the SAE reads (default: the lab's)")
    s.add_argument("--hook", help="mlp_out, resid_post or attn_out: overrides what the SAE's config names")
    s.add_argument("--layer", type=int_arg, help="the layer: overrides what the SAE's config names")
    s.add_argument("--domains", help="domains to evaluate on (default: the lab's latest run's), comma-separated")
    s.add_argument("--tokens", type=int_arg, help="token budget per domain (default: the lab's latest run's)")
    s.add_argument("--name", help="the run's name (default import/<folder>)")
    s.add_argument("--tag", action="append", default=[], help="tag the run (it is tagged 'imported' and its format anyway)")
    s.add_argument("--norm-scaling-factor", dest="norm_scaling_factor", type=float_arg,
                   help="SAELens normalize_activations=expected_average_only_in: the factor it was trained with")
    s.add_argument("--no-analysis", action="store_true", help="skip the feature analysis (python -m engine analyze RUN later)")
    s.add_argument("--preview", action="store_true", help="print what was recognised and write nothing")
    s.set_defaults(fn=cmd_import)

    s = sub.add_parser("export", help="write a run as a dictionary_learning, sparsify or SAELens folder")
    s.add_argument("run_id")
    s.add_argument("--format", required=True, choices=FORMATS)
    s.add_argument("--out", required=True, help="a new (or empty) folder")
    s.set_defaults(fn=cmd_export, read_only=True)
