"""CLI commands of the feature analysis: analyze, probe, top-texts, match, feature.

Registered on the engine's parser by ``add_analysis_commands(subparsers)``; each command is a
``fn(args, lab) -> int`` like the engine's own.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np

from core.config_base import apply_override, parse_override
from core.errors import LabError
from db import ensure_schema, query
from engine.analysis.config import AnalysisConfig
from engine.analysis.queries import feature_detail, render_tokens, top_texts
from engine.cli_args import int_arg


def add_analysis_commands(sub) -> None:
    s = sub.add_parser("analyze", help="feature analysis of trained runs (statistics, contexts, neighbours, map, labels)")
    s.add_argument("run_ids", nargs="*", metavar="RUN")
    s.add_argument("--all", action="store_true", help="every finished run that has no analysis yet")
    s.add_argument("--redo", action="store_true", help="with --all: re-analyse runs that already have one")
    s.add_argument("--seed", type=int_arg, default=0, help="seed of the quantile samples, k-means and t-SNE")
    s.add_argument("--tsne", action="store_true", help="also compute 2D/3D t-SNE maps (slower)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an analysis setting, e.g. --set n_clusters=12 (see engine/analysis/config.py)")
    s.add_argument("--json", action="store_true", help="print each summary as JSON")
    s.add_argument("--concepts", metavar="FILE.py", help="a Python file that adds ground-truth concepts with "
                   "engine.analysis.concepts.register_regex(name, pattern, kind) / register_function(name, fn, kind)")
    s.set_defaults(fn=cmd_analyze)

    s = sub.add_parser("concepts",
                       help="a run's ground-truth concept table: best latent, F1, k-sparse probes vs the model's dims")
    s.add_argument("run_ids", nargs="*", metavar="RUN")
    s.add_argument("--all", action="store_true", help="every run with a concept evaluation")
    s.set_defaults(fn=cmd_concepts)

    s = sub.add_parser("probe", help="the top features of every token of a text")
    s.add_argument("--run", required=True, help="run id")
    s.add_argument("text")
    s.add_argument("--top", type=int_arg, default=5, help="features shown per token")
    s.set_defaults(fn=cmd_probe, read_only=True)

    s = sub.add_parser("top-texts", help="a feature's top activating contexts from the corpora")
    s.add_argument("--run", required=True, help="run id")
    s.add_argument("--feature", required=True, type=int_arg)
    s.add_argument("--domain", help="only this domain")
    s.add_argument("-n", type=int_arg, default=10, help="how many")
    s.set_defaults(fn=cmd_top_texts, read_only=True)

    s = sub.add_parser("feature", help="what the analysis knows about one feature (label, stats, neighbours, effects)")
    s.add_argument("--run", required=True, help="run id")
    s.add_argument("feature", type=int_arg)
    s.set_defaults(fn=cmd_feature, read_only=True)

    s = sub.add_parser("match", help="match each feature of RUN_A to its best counterpart in RUN_B by decoder cosine")
    s.add_argument("run_a")
    s.add_argument("run_b")
    s.add_argument("--show", type=int_arg, default=10, help="matched pairs to print (best first)")
    s.set_defaults(fn=cmd_match)


def _analysis_config(args):
    data = {"seed": args.seed, "tsne": bool(args.tsne)}
    for text in args.set:
        path, value = parse_override(text)
        apply_override(data, path, value)
    return AnalysisConfig.from_dict(data, "analysis").validate()


def cmd_analyze(args, lab) -> int:
    # deferred: loads torch, and the parser is built for every command
    from engine.analysis.analyze import analyze_run

    cfg = _analysis_config(args)
    if args.concepts:
        _load_concepts(args.concepts)
    ids = list(args.run_ids)
    if args.all:
        ensure_schema(lab)
        sql = "SELECT run_id FROM runs WHERE status = 'FINISHED'"
        if not args.redo:
            sql += " AND run_id NOT IN (SELECT run_id FROM analysis_runs)"
        ids += [r for r in query(lab, sql + " ORDER BY created_at")["run_id"] if r not in ids]
    if not ids and args.all:
        print("every finished run already has a feature analysis (add --redo to analyse them again)")
        return 0
    if not ids:
        raise LabError("no runs to analyse: pass run ids, or --all for finished runs without an analysis")
    for rid in ids:
        s = analyze_run(lab, rid, progress=not args.quiet, config=cfg)
        if args.json:
            print(json.dumps(s, default=float))
            continue
        classes = ", ".join(f"{v} {k}" for k, v in sorted(s["classes"].items()))
        line = f"run {rid}: {s['n_live']} live / {s['n_dead']} dead features ({classes}); {s['n_contexts']:,} contexts"
        if s["median_label_score"] is not None:
            line += f"; label detection median {s['median_label_score']:.2f}, {s['labels_above_0_9']} labels >= 0.9"
        if s.get("labels_reliable") is not None:
            line += f", {s['labels_reliable']} reliable"
        c = s.get("concepts")
        if c and c.get("coverage") is not None:
            line += (f"; concepts covered {c['coverage']:.0%} of {c['n_concepts']} (model dims {c['coverage_baseline']:.0%}), "
                     f"1-latent probe {c['probe_k1']:.3f} vs {c['probe_k1_baseline']:.3f}")
        print(f"{line}; {s['n_clusters']} clusters; {s['seconds']:.1f} s")
        for w in ((s.get("quality") or {}).get("details") or {}).get("warnings") or []:
            print(f"  warning: not fit for interpretability, whatever the rating says: {w}")
        for note in s["notes"]:
            print(f"  note: {note}")
    return 0


def _load_concepts(path: str) -> None:
    """Run a researcher's concept file (it registers concepts in engine.analysis.concepts.REGISTRY)."""
    if not Path(path).is_file():
        raise LabError(f"concept file '{path}' does not exist: pass a .py file that calls register_regex / register_function")
    try:
        runpy.run_path(path, run_name="lab_concepts")
    except LabError:
        raise
    except Exception as e:
        raise LabError(f"concept file '{path}' failed ({type(e).__name__}: {e}): fix the file") from None


def cmd_concepts(args, lab) -> int:
    # deferred: the concept evaluation loads scipy, and the parser is built for every command
    from engine.analysis.concepts.table import run_concept_report

    ids = list(args.run_ids)
    if args.all:
        ids += [r for r in query(lab, "SELECT DISTINCT run_id FROM concept_results ORDER BY run_id")["run_id"] if r not in ids]
    if not ids:
        raise LabError("no runs given: pass run ids, or --all for every run with a concept evaluation")
    for rid in ids:
        report = run_concept_report(lab, rid)
        if report is None:
            raise LabError(f"run '{rid}' has no concept evaluation: run `python -m engine analyze {rid}`")
        print(f"run {rid}:\n{report}\n")
    return 0


def cmd_probe(args, lab) -> int:
    # deferred: loads torch, and the parser is built for every command
    from engine.analysis.probe import probe_text

    res = probe_text(lab, args.run, args.text, args.top)
    width = max((len(t.token) for t in res.tokens), default=5)
    for t in res.tokens:
        feats = "  ".join(f"#{f} {a:.2f}" for f, a in t.features) if not t.special else "(special token)"
        print(f"{t.position:4d}  {t.token:<{width}}  {feats}")
    if res.truncated:
        print("(text truncated to the run's sequence length)")
    print("strongest over the text: " + ", ".join(f"#{f} {a:.2f}" for f, a in res.totals[:10]))
    return 0


def cmd_top_texts(args, lab) -> int:
    rows = top_texts(lab, args.run, args.feature, args.domain, args.n)
    if not rows:
        print(f"feature {args.feature} never fires on {'domain ' + args.domain if args.domain else 'any domain'}")
    for r in rows:
        toks = list(r["tokens"])
        toks[r["center"]] = f"[[{toks[r['center']]}]]"
        print(f"{r['activation']:7.3f}  {r['domain']:<10}  {render_tokens(toks)}")
    return 0


def cmd_feature(args, lab) -> int:
    d = feature_detail(lab, args.run, args.feature)
    f = d["feature"]
    score = f"{f['label_score']:.2f}" if f.get("label_score") is not None else "n/a"
    if f.get("label_score_low") is not None:
        score += f", 95% interval {f['label_score_low']:.2f}-{f['label_score_high']:.2f}"
    print(f"feature {args.feature} of run {args.run}: {f.get('class')}, label \"{f.get('title') or '-'}\" (detection {score}), "
          f"cluster {f.get('cluster')}")
    for c in d.get("concepts") or []:
        print(f"  ground truth: best latent for {c['concept']} (held-out F1 {c['f1']:.2f}, precision {c['precision']:.2f}, "
              f"recall {c['recall']:.2f})")
    for s in d["domains"]:
        mean = f"{s['mean_act']:.3f}" if s["mean_act"] is not None else "-"
        print(f"  {s['domain']:<10} freq {s['freq']:.5f}  mean {mean}  max {s['max_act']:.3f}  fires {s['n_fires']:,}")
    for kind, rows in d["neighbours"].items():
        print(f"  nearest by {kind}: " + ", ".join(f"#{n['neighbour']} ({n['score']:.2f})" for n in rows[:5]))
    for direction, rows in d["token_effects"].items():
        print(f"  pushes {direction}: " + ", ".join(r["token"] for r in rows[:8]))
    return 0


def cmd_match(args, lab) -> int:
    # deferred: loads torch, and the parser is built for every command
    from engine.analysis.matching import match_runs

    m = match_runs(lab, args.run_a, args.run_b)
    s = m.summary()
    print(f"{s['features']} features of {args.run_a} matched to {args.run_b}: mean best cosine {s['mean_cosine']:.3f}, "
          f"{s['share_above_0_9']:.0%} >= 0.9, {s['share_above_0_7']:.0%} >= 0.7, {s['share_mutual']:.0%} mutual")
    for i in np.argsort(-m.cosine, kind="stable")[: args.show]:
        print(f"  #{i} -> #{m.best[i]}  cosine {m.cosine[i]:.3f}{'  (mutual)' if m.mutual[i] else ''}")
    return 0
