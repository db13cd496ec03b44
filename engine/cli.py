"""``python -m engine``: collect, train, eval, run, sql, bench (and the sweep, analysis, import and export commands).

Every user mistake ends as one line on stderr naming the fix, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from core.errors import LabError, os_error
from core.lab import Lab
from db import ensure_schema, query
from db.readonly import run_readonly
from engine.analysis.cli import add_analysis_commands
from engine.bench.cli import add_bench_args, run_bench
from engine.cli_args import comma_list, float_arg, int_arg
from engine.config import ExperimentConfig, build_config
from engine.imports.cli import add_import_commands
from engine.interventions.cli import add_intervention_commands
from engine.lab_open import open_lab
from engine.runs_cli import add_run_commands
from engine.sweeps.cli import add_sweep_commands
from engine.tables import format_table

# A layer above the engine adds its command group to the parser: add(subparsers).
AddCommands = Callable[[Any], None]

# Flag -> config key, for the common settings; anything else goes through --set key=value.
SHORTCUTS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "model": ("model", str),
    "device": ("device", str),
    "hook": ("hook", str),
    "layer": ("layer", int),
    "seed": ("seed", int),
    "name": ("name", str),
    "arch": ("sae.architecture", str),
    "k": ("sae.k", int),
    "d_sae": ("sae.d_sae", int),
    "tokens": ("data.tokens_per_domain", int),
    "seq_len": ("data.seq_len", int),
    "epochs": ("train.epochs", float),
    "batch_size": ("train.batch_size", int),
    "lr": ("train.lr", float),
}




def add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("experiment (defaults: all-MiniLM-L6-v2, mlp_out layer 2, TopK k=16, d_sae=2048, prose+code, 100k "
                             "tokens)")
    g.add_argument("--config", help="JSON or TOML file with experiment settings")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set train.epochs=4")
    g.add_argument("--model", help="model name, local folder, or hub id")
    g.add_argument("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    g.add_argument("--hook", help="mlp_out, resid_post or attn_out")
    g.add_argument("--layer", type=int_arg)
    g.add_argument("--seed", type=int_arg)
    g.add_argument("--name")
    g.add_argument("--arch", help="topk (default), batchtopk, matryoshka_batchtopk, jumprelu, relu, "
                                  "or another registered architecture")
    g.add_argument("--k", type=int_arg)
    g.add_argument("--d-sae", dest="d_sae", type=int_arg)
    g.add_argument("--domains", help="comma-separated: prose, code, wikitext, python-code, a path, or name=path")
    g.add_argument("--train-domains", help="comma-separated subset of the domains to train SAEs on")
    g.add_argument("--layers", help="layers to record in the collection pass: 'all' or e.g. 0,2,4")
    g.add_argument("--tokens", type=int_arg, help="token budget per domain")
    g.add_argument("--seq-len", dest="seq_len", type=int_arg)
    g.add_argument("--epochs", type=float_arg)
    g.add_argument("--batch-size", dest="batch_size", type=int_arg)
    g.add_argument("--lr", type=float_arg)


def config_from_args(args: argparse.Namespace):
    overrides = []
    for flag, (key, _) in SHORTCUTS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={_json(value)}")
    if getattr(args, "domains", None) is not None:
        overrides.append(f"data.domains={_json(comma_list('--domains', args.domains, 'prose,code'))}")
    if getattr(args, "train_domains", None) is not None:
        overrides.append(f"train_domains={_json(comma_list('--train-domains', args.train_domains, 'prose'))}")
    if getattr(args, "layers", None) is not None:
        if args.layers.strip().lower() == "all":
            overrides.append("data.layers=null")
        else:
            try:
                overrides.append(f"data.layers={_json([int(x) for x in comma_list('--layers', args.layers, '0,2,4')])}")
            except ValueError:
                raise LabError(f"--layers '{args.layers}' must be 'all' or comma-separated numbers like 0,2,4") from None
    return build_config(args.config, list(args.set) + overrides)


def _json(v: Any) -> str:
    return json.dumps(v)


# -- commands ---------------------------------------------------------------------------------------
def cmd_collect(args, lab) -> int:
    # deferred: the pipeline loads the model code, scipy and the analysis
    from engine.pipeline import collect

    config = config_from_args(args)
    stores = collect(config, lab, progress=not args.quiet)
    for name, s in stores.items():
        print(f"{name}: {s.meta['n_rows']:,} tokens, {s.meta['n_sequences']} sequences, sites "
              f"{', '.join(sorted(s.meta['sites']))} -> {lab.relative(s.path)}")
    return 0


def _print_outcomes(lab, outcomes) -> None:
    # deferred: the pipeline loads the model code, scipy and the analysis
    from engine.pipeline import transfer_matrix

    if not outcomes or not outcomes[0].evals:
        for o in outcomes:
            print(f"run {o.run_id}: trained ({o.train['steps']} steps, {o.train['tokens_per_second']:,.0f} tokens/s) -> "
                  f"{o.sae_dir}")
        return
    print(format_table(transfer_matrix(lab, outcomes[0].resolved["group_id"])))
    for o in outcomes:
        q = _stored_quality(lab, o.run_id) or o.quality  # the analysis rescores interpretability
        print(f"run {o.run_id} [{o.resolved['train_domain']}]: quality {q['score']:.2f}/5 ({q['rating']}), "
              f"{o.train['tokens_per_second']:,.0f} training tokens/s, SAE in {o.sae_dir}")
        for w in (q.get("details") or {}).get("warnings") or []:
            print(f"  warning: not fit for interpretability, whatever the rating says: {w}")
    # deferred: the concept evaluation loads scipy and the analysis
    from engine.analysis.concepts.table import run_concept_report

    for o in outcomes:
        report = run_concept_report(lab, o.run_id)
        if report:
            print(f"\nground-truth concepts of run {o.run_id} [{o.resolved['train_domain']}] "
                  "(held-out tokens; * = a latent at F1 >= 0.8; probes vs the same probes on the model's own dims):")
            print(report)


def _stored_quality(lab: Lab, run_id: str) -> dict | None:
    """The run's stored quality score (the analysis rescores it after evaluation), or None."""
    df = query(lab, "SELECT * FROM quality_scores WHERE run_id = ?", [run_id])
    if df.empty:
        return None
    q = df.iloc[0].to_dict()
    q["details"] = json.loads(q["details"]) if isinstance(q["details"], str) else q["details"]
    return q


def cmd_train(args, lab, evaluate: bool = False) -> int:
    config = config_from_args(args)  # a mistake in the settings is refused before seconds of imports
    # deferred: the pipeline loads the model code, scipy and the analysis
    from engine.pipeline import run_experiment

    outcomes = run_experiment(config, lab, progress=not args.quiet, evaluate=evaluate, tags=args.tag,
                              analyze=evaluate and not getattr(args, "no_analysis", False))
    _print_outcomes(lab, outcomes)
    return 0


def cmd_run(args, lab) -> int:
    return cmd_train(args, lab, evaluate=True)


def cmd_eval(args, lab) -> int:
    # deferred: the pipeline loads the model code, scipy and the analysis
    from engine.pipeline import evaluate_existing

    ids = list(args.run_ids)
    if args.all:
        ids = list(query(lab, "SELECT run_id FROM runs WHERE status = 'FINISHED' AND run_id NOT IN (SELECT run_id FROM "
                              "eval_results)")["run_id"])
    if not ids:
        raise LabError("no runs to evaluate: pass run ids, or --all for finished runs without evaluation")
    for rid in ids:
        res = evaluate_existing(lab, rid, progress=not args.quiet)
        q = res["quality"]
        print(f"run {rid}: "
              + ", ".join(f"{e['eval_domain']} FVU {e['fvu']:.4f} (x{e['transfer_ratio']:.2f})" for e in res["evals"])
              + f"; quality {q['score']:.2f}/5 ({q['rating']})")
    return 0


def cmd_sql(args, lab) -> int:
    df = run_readonly(lab, args.query, timeout_seconds=args.timeout)
    if args.csv:
        df.to_csv(sys.stdout, index=False)
    else:
        print(format_table(df, max_rows=args.max_rows))
    return 0


def cmd_init(args, lab) -> int:
    """Fill an empty lab with the default experiment (what `make lab` runs); a filled lab is left alone."""
    # deferred: the pipeline loads the model code, scipy and the analysis
    from engine.pipeline import run_experiment, transfer_matrix

    ensure_schema(lab)
    finished = query(lab, "SELECT count(*) AS n FROM runs WHERE status = 'FINISHED'").iloc[0, 0]
    if finished == 0:
        print(f"empty lab at {lab.root}: running the default experiment (layer 2 mlp_out, TopK k=16, d_sae=2048, prose + code, "
              "100k tokens each)")
        outcomes = run_experiment(ExperimentConfig().validate(), lab, progress=not args.quiet)
        _print_outcomes(lab, outcomes)
    else:
        print(f"lab at {lab.root} holds {finished} finished runs; latest transfer matrix:")
        print(format_table(transfer_matrix(lab)))
    return 0


def cmd_bench(args, lab) -> int:
    return run_bench(args)


def build_parser(extra_commands: Sequence[AddCommands] = ()) -> argparse.ArgumentParser:
    """The engine's parser; ``extra_commands`` add the command groups of the layers above the engine
    (``python -m engine`` adds the findings commands: see engine/__main__.py)."""
    p = argparse.ArgumentParser(prog="python -m engine", description="SAE interpretability lab engine")
    p.add_argument("--lab", help="lab folder (default ./lab_data or $SAE_LAB_DIR)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("collect", help="record activations (all layers in one pass) for every domain")
    add_config_args(s)
    s.set_defaults(fn=cmd_collect)

    s = sub.add_parser("train", help="train one SAE per training domain (collects first if needed)")
    add_config_args(s)
    s.add_argument("--tag", action="append", default=[], help="tag the runs")
    s.set_defaults(fn=lambda a, lab: cmd_train(a, lab, evaluate=False))

    s = sub.add_parser("eval", help="evaluate trained runs on every domain (transfer matrix, splice, quality)")
    s.add_argument("run_ids", nargs="*")
    s.add_argument("--all", action="store_true", help="every finished run that has no evaluation yet")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("run", help="collect + train + eval + feature analysis: the whole experiment")
    add_config_args(s)
    s.add_argument("--tag", action="append", default=[], help="tag the runs")
    s.add_argument("--no-analysis", action="store_true", help="skip the feature analysis after training")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("init", help="run the default experiment if the lab is empty (used by `make lab`)")
    s.set_defaults(fn=cmd_init)

    s = sub.add_parser("sql", help="read-only SQL over the lab database; prints a table")
    s.add_argument("query")
    s.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    s.add_argument("--max-rows", type=int_arg, default=200)
    s.add_argument("--timeout", type=float_arg, default=60.0)
    s.set_defaults(fn=cmd_sql, read_only=True)

    add_run_commands(sub)
    add_sweep_commands(sub)
    add_analysis_commands(sub)
    add_intervention_commands(sub)
    add_import_commands(sub)
    for add in extra_commands:
        add(sub)

    s = sub.add_parser("bench", help="speed and memory figures, measured side by side in one run")
    add_bench_args(s)
    s.set_defaults(fn=cmd_bench)
    return p


def _lab_is_empty(root: Path) -> bool:
    return root.is_dir() and all(p.is_dir() or p.suffix == ".lock" for p in root.rglob("*"))


def main(argv: list[str] | None = None, extra_commands: Sequence[AddCommands] = ()) -> int:
    if os.environ.get("SAE_LAB_THREADS"):  # torch is not loaded yet: it reads this when it starts
        os.environ.setdefault("OMP_NUM_THREADS", os.environ["SAE_LAB_THREADS"])
    parser = build_parser(extra_commands)
    args = parser.parse_args(argv)
    lab = Lab.at(args.lab)
    existed = lab.root.exists()
    try:
        try:
            # Read-only commands only read (an older schema is upgraded when it can be); the others
            # check they can write and clean up after processes that died.
            for note in open_lab(lab, read_only=getattr(args, "read_only", False), recover=getattr(args, "recover", True)):
                print(f"note: {note}", file=sys.stderr)
            return int(args.fn(args, lab) or 0)
        except OSError as e:  # the environment (permissions, a file for a folder, a full disk): one line
            err = os_error(e)
            if err is None:
                raise
            raise err from None
    except LabError as e:
        # Bad input writes nothing: drop a lab folder this command created and left empty.
        if not existed and _lab_is_empty(lab.root):
            shutil.rmtree(lab.root, ignore_errors=True)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
