"""Preview and import: an SAE from elsewhere becomes a FINISHED run, evaluated and analysed like a trained one.

``plan_import`` reads the source and checks it against the model (hook point, layer, width) without
writing anything: the preview the CLI's ``--preview`` and the app show, and the only place bad input
is refused. ``import_sae`` then evaluates the SAE on the lab's domains (the N×N transfer matrix's row,
splice fidelity, the quality score) exactly as ``engine.runs.evaluate_sae`` evaluates a trained run,
and only then writes (``record``): the run's folder (``config.json``, ``sae/`` in SAELens's layout) and,
in one transaction, its rows (``runs`` as FINISHED, ``eval_results``, ``splice_results``,
``quality_scores``, ``artifacts``, ``run_imports``). A failure before that commit removes the folder, so the lab is as it
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

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import LabError
from core.lab import Lab
from db import query_rows, write_now
from engine.artifacts import collection_sites
from engine.collection.collect import collect_domains
from engine.collection.models import ModelInfo, resolve_model
from engine.config import DEFAULT_MODEL, HOOK_POINTS, ExperimentConfig, parse_domain
from engine.device import pick_device
from engine.evaluation.metrics import evaluate_reconstruction
from engine.imports import hook_names, recognise, record, release
from engine.imports.source import SourceSAE
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
                   f"activations of {', '.join(config.domain_names)} (collected once, reused after)")
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
        resolved = record.write_files(lab, run_id, s, plan.info, config, sae, stores, device, notes)
        write_now(lab, record.rows(lab, run_id, s, config, resolved, evals, splices, quality, notes, tags)
                  + record.activation_set_rows(lab, stores))
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if analyze:
        # deferred: the analysis loads scikit-learn and scipy; an import with --no-analysis never needs them
        from engine.analysis.analyze import analyze_after_training

        analyze_after_training(lab, run_id, progress)
    return ImportOutcome(run_id, False, plan, evals, quality, notes)


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
