"""Preview and import: an SAE from elsewhere becomes a FINISHED run, evaluated and analysed like a trained one.

``plan_import`` reads the source and checks it against the model (hook point, layer, width) without
writing anything: the preview the CLI's ``--preview`` and the app show, and the only place bad input
is refused. ``import_sae`` then evaluates the SAE on the lab's domains (the N×N transfer matrix's row,
splice fidelity, the quality score) exactly as ``engine.runs.evaluate_sae`` evaluates a trained run,
and only then writes: the run's folder (``config.json``, ``sae/`` in SAELens's layout) and, in one
transaction, its rows (``runs`` as FINISHED, ``eval_results``, ``splice_results``, ``quality_scores``,
``artifacts``, ``run_imports``). A failure before that commit removes the folder, so the lab is as it
was. The feature analysis follows, as after training (``analyze_after_training``).

Choices an import has to make, and why:

- the domains and token budget: the lab's latest finished run's (its activations are then reused,
  and the import's numbers sit next to the lab's own runs), else the defaults; ``--domains`` and
  ``--tokens`` override;
- the reference domain (``runs.train_domain``: the in-domain metrics and transfer ratios are relative
  to it): the first domain — the SAE was trained on none of them;
- k: the source's (TopK, BatchTopK, a JumpReLU's target L0); otherwise the held-out L0 on the reference
  domain, which the quality score's sparsity then reads as its target (said in ``run_imports.conversion``);
- the model: ``--model``, else the lab's; the SAE's own config may name another (recorded, and a
  mismatched width is refused).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.errors import LabError, writing_to
from core.lab import Lab, code_version
from db import Op, query_rows, utcnow, write_now
from engine.artifacts import collection_sites
from engine.collection.collect import collect_domains
from engine.collection.models import ModelInfo, resolve_model
from engine.config import DEFAULT_MODEL, HOOK_POINTS, ExperimentConfig, parse_domain
from engine.device import pick_device
from engine.evaluation.metrics import evaluate_reconstruction
from engine.imports import hook_names, recognise, release
from engine.imports.source import SourceSAE
from engine.recording import EVAL_COLUMNS, SPLICE_COLUMNS
from engine.run_owner import Owner
from engine.runs import evaluate_sae, new_run_id


@dataclass
class ImportPlan:
    source: SourceSAE
    model: str
    info: ModelInfo
    hook: str
    layer: int
    hook_note: str = ""  # how the hook point was decided, when the source did not say it plainly
    existing: str | None = None  # the run these weights were already imported as
    model_note: str = ""  # the source names another model than the one it is evaluated on

    @property
    def notes(self) -> list[str]:
        return [n for n in (self.hook_note, self.model_note) if n] + list(self.source.notes)

    def summary(self) -> dict[str, Any]:
        """What was recognised, for the preview (CLI and app)."""
        s = self.source
        return {"format": s.format, "architecture": s.architecture, "source architecture": s.source_architecture,
                "d_in": s.d_in, "d_sae": s.d_sae, "hook": self.hook, "layer": self.layer,
                "k": s.k if s.k is not None else "measured (held-out L0)", "model": self.model,
                "source hook": s.hook_name or "—", "source model": s.model_name or "—", "sha256": s.sha256[:16],
                "path": s.path}


@dataclass
class ImportOutcome:
    run_id: str
    existed: bool
    plan: ImportPlan
    evals: list[dict] = field(default_factory=list)
    quality: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def lab_experiment(lab: Lab) -> dict[str, Any]:
    """The experiment settings of the lab's latest finished run (domains, budget, seed), or the defaults."""
    if lab.db.exists():
        try:
            rows = query_rows(lab, "SELECT config FROM runs WHERE status = 'FINISHED' ORDER BY ended_at DESC LIMIT 1")
        except LabError:
            rows = []
        if rows:
            try:
                exp = json.loads(rows[0][0]).get("experiment")
                return ExperimentConfig.from_dict(exp, "config").to_dict()
            except (LabError, ValueError, TypeError, AttributeError):
                pass
    return ExperimentConfig().to_dict()


def plan_import(lab: Lab, path: str | Path | None = None, *, release_name: str | None = None, sae_id: str | None = None,
                model: str | None = None, hook: str | None = None, layer: int | None = None,
                norm_scaling_factor: float | None = None) -> ImportPlan:
    """Read the source and check it against the model; writes nothing. Bad input -> one LabError."""
    if hook is not None and hook not in HOOK_POINTS:
        raise LabError(f"unknown hook point '{hook}': use one of {', '.join(HOOK_POINTS)}")
    if layer is not None and layer < 0:
        raise LabError(f"--layer {layer} must be 0 or more")
    model = model or lab_experiment(lab).get("model") or DEFAULT_MODEL
    info = resolve_model(model)
    if release_name or sae_id:
        if path:
            raise LabError("give either a folder or --release/--sae-id, not both")
        source = release.read(release_name or "", sae_id or "")
    elif path:
        found = recognise.recognise(path)
        folder = recognise.select_hookpoint(found, hook, layer, info.model_type)
        source = recognise.read_found(found, folder, norm_scaling_factor)
    else:
        raise LabError("nothing to import: give the SAE's folder, or --release R --sae-id S")
    hook_, layer_, note = _hook_and_layer(source, hook, layer, info)
    if not 0 <= layer_ < info.n_layers:
        named = f" (its hook '{source.hook_name}')" if source.hook_name else ""
        raise LabError(f"the SAE reads layer {layer_}{named}, which model '{model}' does not have (layers 0 to "
                       f"{info.n_layers - 1}): import it with the model it was trained on (--model) or give --layer")
    if source.d_in != info.d_model:
        raise LabError(f"the SAE reads {source.d_in}-wide activations, but model '{model}' has {info.d_model}-wide {hook_} "
                       f"activations: import it with the model it was trained on (--model NAME or a local folder)")
    plan = ImportPlan(source, model, info, hook_, layer_, note)
    plan.existing = existing_import(lab, source.sha256, model, hook_, layer_)
    if source.model_name and _short(source.model_name) not in (_short(model), _short(info.name)):
        plan.model_note = (f"the SAE's config names model '{source.model_name}'; it is evaluated on '{model}' (same width: "
                           f"{info.d_model}); pass --model to choose another")
    return plan


def _short(name: str) -> str:
    """A model's name without its hub owner or folder, for comparing what a source says with the lab's model."""
    return str(name).rstrip("/").split("/")[-1].lower()


def _hook_and_layer(source: SourceSAE, hook: str | None, layer: int | None, info: ModelInfo) -> tuple[str, int, str]:
    if hook is not None and layer is not None:
        said = f" (the SAE's config names '{source.hook_name}')" if source.hook_name else ""
        return hook, layer, f"hook point {hook}@{layer} given with --hook and --layer{said}"
    if source.hook_name:
        h, lay, note = hook_names.from_name(source.hook_name, info.model_type)
        return hook or h, layer if layer is not None else lay, note
    lay = layer if layer is not None else source.layer_hint
    if lay is None:
        raise LabError(f"{source.path} does not say which layer the SAE reads: pass --layer N (and --hook)")
    if hook is not None:
        return hook, lay, ""
    return "resid_post", lay, ("the source does not name its hook point: resid_post assumed (dictionary_learning's "
                               "residual-stream default); pass --hook to change it")


def existing_import(lab: Lab, sha256: str, model: str, hook: str, layer: int) -> str | None:
    if not lab.db.exists():
        return None
    try:
        rows = query_rows(lab, """SELECT i.run_id FROM run_imports i JOIN runs r USING (run_id)
                                  WHERE i.weights_sha256 = ? AND r.model = ? AND r.hook = ? AND r.layer = ?
                                    AND r.status = 'FINISHED' ORDER BY r.created_at LIMIT 1""", [sha256, model, hook, layer])
    except LabError:  # a lab whose schema predates imports has none
        return None
    return rows[0][0] if rows else None


def _config(plan: ImportPlan, base: dict[str, Any], k: int, domains: list[str] | None, name: str | None,
            tokens: int | None = None) -> ExperimentConfig:
    s = plan.source
    data = {**base["data"], "layers": [plan.layer], "hooks": None}
    if domains is not None:
        data["domains"] = [parse_domain(d).to_dict() for d in domains]
    if tokens is not None:
        data["tokens_per_domain"] = tokens
    sae = {"architecture": s.architecture, "d_sae": s.d_sae, "k": k}
    if s.options.get("prefixes"):
        sae["prefixes"] = list(s.options["prefixes"])
    cfg = {"name": name or f"import/{s.folder_name}", "model": plan.model, "device": base.get("device", "auto"),
           "hook": plan.hook, "layer": plan.layer, "seed": base.get("seed", 0), "data": data, "sae": sae,
           "eval": base.get("eval", {})}
    return ExperimentConfig.from_dict(cfg, "config").validate()


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def import_sae(lab: Lab, plan: ImportPlan, domains: list[str] | None = None, name: str | None = None,
               tags: list[str] | None = None, analyze: bool = True, progress: bool = False,
               tokens: int | None = None) -> ImportOutcome:
    """Evaluate, record and analyse an imported SAE; an existing import of the same weights is returned as is."""
    if plan.existing:
        return ImportOutcome(plan.existing, True, plan)
    s = plan.source
    base = lab_experiment(lab)
    config = _config(plan, base, s.k or 1, domains, name, tokens)  # settings checked before anything is collected
    if config.data.seq_len > plan.info.max_positions:
        raise LabError(f"seq_len = {config.data.seq_len} exceeds model '{plan.model}''s context of {plan.info.max_positions}")
    device = pick_device(config.device)
    _say(progress, f"importing {s.path} ({s.format}, {s.architecture}, d_sae {s.d_sae}) at {plan.hook}@{plan.layer}: "
                   f"collecting {', '.join(config.domain_names)}")
    stores = collect_domains(lab, plan.info, device, config.data.domains, config.data, config.seed,
                             collection_sites(config, plan.info), progress and sys.stderr.isatty())
    reference = config.domain_names[0]
    k, k_source = s.k, "the source's own k"
    if k is None:
        store = stores[reference]
        probe, _ = evaluate_reconstruction(s.to_sae(1), store.acts(plan.hook, plan.layer), store.val_start, store.n_rows,
                                           device)
        k = max(1, min(s.d_sae, int(round(probe.l0))))
        k_source = f"no k in the source: the held-out L0 on {reference} ({probe.l0:.2f}), the quality score's sparsity target"
        config = _config(plan, base, k, domains, name, tokens)
    sae = s.to_sae(k).to(device)
    _say(progress, f"evaluating on every domain (transfer, splice, quality); reference domain {reference}")
    evals, splices, quality, _ = evaluate_sae(sae, config, reference, stores, device, train_steps=None)
    run_id = new_run_id()
    run_dir = lab.run_dir(run_id)
    notes = plan.notes + [f"k = {k}: {k_source}"]
    try:
        resolved = _write_files(lab, run_dir, run_id, plan, config, sae, stores, device, notes)
        write_now(lab, _rows(lab, run_id, plan, config, resolved, evals, splices, quality, notes, tags) + _sets(lab, stores))
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if analyze:
        # deferred: the analysis loads scikit-learn and scipy; an import with --no-analysis never needs them
        from engine.analysis.analyze import analyze_after_training

        analyze_after_training(lab, run_id, progress)
    return ImportOutcome(run_id, False, plan, evals, quality, notes)


def _write_files(lab: Lab, run_dir: Path, run_id: str, plan: ImportPlan, config: ExperimentConfig, sae, stores, device,
                 notes: list[str]) -> dict[str, Any]:
    s = plan.source
    run_dir.mkdir(parents=True, exist_ok=False)
    resolved = {
        "run_id": run_id, "group_id": _group_id(plan), "train_domain": config.domain_names[0],
        "experiment": config.to_dict(), "model": plan.info.to_dict(), "device": str(device),
        "activation_sets": {n: st.key for n, st in stores.items()}, "code_version": code_version(),
        "torch": torch.__version__, "python": platform.python_version(),
        "import": {"format": s.format, "path": s.path, "weights_file": s.weights_file, "weights_sha256": s.sha256,
                   "source_architecture": s.source_architecture, "source_hook": s.hook_name, "source_model": s.model_name,
                   "notes": notes},
    }
    sae.cpu().save(run_dir / "sae", {  # atomic, and a full disk is one DiskFullError
        "model_name": plan.model, "hook_name": f"{plan.hook}@{plan.layer}", "hook_layer": plan.layer,
        "context_size": config.data.seq_len, "dataset_path": f"imported ({s.format})", "run_id": run_id,
        "lab_input_scale": 1.0, "imported_from": s.path,
    })
    with writing_to(run_dir / "config.json"):
        (run_dir / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True))
    return resolved


def _group_id(plan: ImportPlan) -> str:
    key = f"{plan.source.sha256}|{plan.model}|{plan.hook}|{plan.layer}"
    return "imp-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _rows(lab: Lab, run_id: str, plan: ImportPlan, config: ExperimentConfig, resolved: dict, evals: list[dict],
          splices: list[dict], quality: dict, notes: list[str], tags: list[str] | None) -> list[Op]:
    """Every row of the imported run, written in one transaction."""
    s, now = plan.source, utcnow()
    reference = resolved["train_domain"]
    run = {
        "run_id": run_id, "group_id": resolved["group_id"], "name": config.name, "status": "FINISHED",
        "created_at": now, "started_at": now, "ended_at": now, "heartbeat_at": now, "model": config.model,
        "hook": config.hook, "layer": config.layer, "architecture": s.architecture, "d_in": s.d_in, "d_sae": s.d_sae,
        "k": config.sae.k, "train_domain": reference, "domains": config.domain_names, "seed": config.seed,
        "tokens_per_domain": config.data.tokens_per_domain, "config": json.dumps(resolved, sort_keys=True),
        "code_version": resolved["code_version"], "device": resolved["device"],
        "artifact_dir": lab.relative(lab.run_dir(run_id)), "tags": sorted({"imported", s.format, *(tags or [])}),
        "sweep_id": None, **Owner.current().columns(),
    }
    ops = [Op("insert", "runs", list(run), [list(run.values())], on_conflict="error")]
    for e in evals:
        row = {"run_id": run_id, "eval_domain": e["eval_domain"], "train_domain": reference,
               **{c: e.get(c) for c in EVAL_COLUMNS}, "evaluated_at": now}
        ops.append(Op("insert", "eval_results", list(row), [list(row.values())], on_conflict="replace"))
    for sp in splices:
        row = {"run_id": run_id, "eval_domain": sp["eval_domain"], **{c: sp.get(c) for c in SPLICE_COLUMNS}, "evaluated_at": now}
        ops.append(Op("insert", "splice_results", list(row), [list(row.values())], on_conflict="replace"))
    if quality:
        points = ("reconstruction_points", "sparsity_points", "interpretability_points", "score", "rating")
        row = {"run_id": run_id, **{k: quality[k] for k in points}, "details": json.dumps(quality["details"]),
               "scored_at": now}
        ops.append(Op("insert", "quality_scores", list(row), [list(row.values())], on_conflict="replace"))
    sae_dir = lab.run_dir(run_id) / "sae"
    art = {"run_id": run_id, "name": "sae", "kind": "saelens", "path": lab.relative(sae_dir),
           "bytes": sum(f.stat().st_size for f in sae_dir.iterdir()), "created_at": now}
    ops.append(Op("insert", "artifacts", list(art), [list(art.values())], on_conflict="replace"))
    prov = {"run_id": run_id, "source_format": s.format, "source_path": s.path, "weights_file": s.weights_file,
            "weights_sha256": s.sha256, "source_architecture": s.source_architecture, "source_hook": s.hook_name,
            "source_model": s.model_name, "original_config": s.config_text,
            "conversion": json.dumps({"notes": notes, "k": config.sae.k}), "imported_at": now}
    ops.append(Op("insert", "run_imports", list(prov), [list(prov.values())], on_conflict="error"))
    return ops


def _sets(lab: Lab, stores: dict) -> list[Op]:
    """The activation sets the import read (collected now or before), as ``engine.pipeline.collect`` records them."""
    ops = []
    for store in stores.values():
        m = store.meta
        row = {"key": m["key"], "model": m["model"], "domain": m["domain"], "source": m["source"], "n_tokens": m["n_rows"],
               "n_sequences": m["n_sequences"], "seq_len": m["seq_len"], "seed": m["seed"], "hooks": sorted(m["sites"]),
               "path": lab.relative(store.path), "created_at": utcnow()}
        ops.append(Op("insert", "activation_sets", list(row), [list(row.values())], on_conflict="replace"))
    return ops


def describe(outcome: ImportOutcome) -> list[str]:
    """The lines the CLI prints (and the app shows) for an import."""
    p = outcome.plan
    if outcome.existed:
        return [f"already imported: these weights ({p.source.weights_file}, sha256 {p.source.sha256[:16]}) at "
                f"{p.hook}@{p.layer} of {p.model} are run {outcome.run_id}; nothing written"]
    own = outcome.evals[0] if outcome.evals else {}  # the reference domain comes first
    q = outcome.quality or {}
    lines = [f"imported {p.source.path} ({p.source.format}, {p.source.architecture}, d_sae {p.source.d_sae}, "
             f"{p.hook}@{p.layer}) as run {outcome.run_id}: FVU {own.get('fvu', float('nan')):.4f}, "
             f"L0 {own.get('l0', float('nan')):.1f} on {own.get('eval_domain', '?')}"
             + (f", quality {q['score']:.2f}/5 ({q['rating']})" if q.get("score") is not None else "")]
    lines += [f"  note: {n}" for n in outcome.notes]
    return lines
