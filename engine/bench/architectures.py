"""``python -m engine bench architectures``: every registered architecture side by side.

On the default experiment's activations (layer 2 ``mlp_out``, each domain in turn, plus any
``--extra-domain`` text collected at the same site) and at each L0 in ``--l0s``, one SAE per
architecture is trained at the lab's defaults with ``k`` = that L0 (exact for TopK, a batch mean for
BatchTopK and Matryoshka, the target for JumpReLU and ReLU + L1). As in ``bench train``, the contenders
are interleaved step by step (this shared machine's speed drifts by ±30 % from minute to minute), and
each one's own step times, plus its end-of-training step (BatchTopK's threshold calibration), make its
tokens/s. Reported per SAE, each named for what it measures:
  FVU (held-out)      Σ‖x − x̂‖² / Σ‖x − x̄‖² on the held-out tokens (mean-centred)
  L0 (held-out)       mean active latents per token at inference on the held-out tokens
  dead (train)        share of latents that did not fire in the last ``dead_after_tokens`` training tokens
  dead (held-out)     share of latents that never fire on the held-out tokens (reads high on a small split)
  tokens/s            training throughput, and its ratio to TopK's at the same L0
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from core.errors import LabError
from engine.artifacts import collect_for
from engine.config import ExperimentConfig, SAEConfig, TrainConfig, build_config
from engine.evaluation.metrics import evaluate_reconstruction
from engine.training import architectures
from engine.training.data import ShuffledBatches
from engine.training.trainer import Trainer, init_sae_from_store_stats


def _stores(args, lab, config, progress: bool):

    stores = collect_for(config, lab, progress)
    wanted = [d.strip() for d in args.bench_domains.split(",")] if getattr(args, "bench_domains", None) else list(stores)
    unknown = [d for d in wanted if d not in stores]
    if unknown:
        raise LabError(f"--bench-domains {unknown[0]} is not a default domain: use {', '.join(stores)}")
    out = {d: stores[d] for d in wanted}
    for spec in getattr(args, "extra_domain", []) or []:
        extra = build_config(base={"data": {"domains": [spec], "layers": [config.layer]}})
        out.update(collect_for(extra, lab, progress))
    return out


def _contender(store, config, arch: str, l0: int, epochs: float | None, label: str | None = None,
               **sae_settings: Any) -> dict[str, Any]:
    sae_cfg = SAEConfig(**{**config.sae.to_dict(), "architecture": arch, "k": l0, **sae_settings})
    train_cfg = TrainConfig(**{**config.train.to_dict(), "epochs": epochs or config.train.epochs})
    acts = store.acts(config.hook, config.layer)
    stats = store.site_stats(config.hook, config.layer)
    sae = init_sae_from_store_stats(store.d_model, sae_cfg, np.asarray(stats["train_mean"]), stats["train_mean_sq_norm"],
                                    config.seed)
    batches = ShuffledBatches(acts, 0, store.val_start, train_cfg.batch_size, config.seed)
    tr = Trainer(sae, sae_cfg, train_cfg, batches, torch.device("cpu"), config.seed)
    it = batches.iterate(0, tr.total_steps, torch.device("cpu"), scale=float(sae.input_scale))
    return {"arch": label or arch, "trainer": tr, "sae": sae, "iter": it, "tokens": 0, "seconds": 0.0, "steps": 0,
            "total": tr.total_steps, "acts": acts, "store": store}


def _train_interleaved(contenders: list[dict[str, Any]], bar) -> None:
    while True:
        pending = [c for c in contenders if c["steps"] < c["total"]]
        if not pending:
            break
        c = min(pending, key=lambda c: c["tokens"])
        step, x = next(c["iter"])
        tr = c["trainer"]
        t0 = time.perf_counter()
        tr.train_step(x, tr.lr_at(step), want_metrics=False)
        c["seconds"] += time.perf_counter() - t0
        tr.step = step + 1
        c["steps"] += 1
        c["tokens"] += x.shape[0]
        bar.update(1)
    for c in contenders:  # the end-of-training step counts towards the architecture's time
        t0 = time.perf_counter()
        c["trainer"].finalize()
        c["seconds"] += time.perf_counter() - t0


def _measure(c: dict[str, Any]) -> dict[str, Any]:
    tr, store = c["trainer"], c["store"]
    m, _ = evaluate_reconstruction(c["sae"], c["acts"], store.val_start, store.n_rows, torch.device("cpu"))
    dead_train = float((tr.tokens_since_fired >= tr.cfg.dead_after_tokens).float().mean())
    return {"architecture": c["arch"], "fvu_heldout": m.fvu, "l0_heldout": m.l0, "dead_train": dead_train,
            "dead_heldout": m.dead_frac, "tokens_per_s": c["tokens"] / max(c["seconds"], 1e-9), "tokens": c["tokens"],
            "matmul_dtype": str(tr.matmul_dtype).replace("torch.", "")}


def bench_architectures(args, lab, out: dict) -> None:
    config = ExperimentConfig().validate()
    names = architectures.names() if not args.archs else [a.strip() for a in args.archs.split(",") if a.strip()]
    for n in names:
        architectures.get(n)  # a one-line error for a typo
    try:
        l0s = [int(v) for v in args.l0s.split(",") if v.strip()]
    except ValueError:
        raise LabError(f"--l0s '{args.l0s}' must be whole numbers separated by commas, e.g. 8,16,32") from None
    if not l0s or min(l0s) < 1:
        raise LabError(f"--l0s '{args.l0s}' must list at least one L0 of 1 or more, e.g. 8,16,32")
    try:
        seeds = [int(v) for v in str(args.seeds).split(",") if v.strip()]
    except ValueError:
        raise LabError(f"--seeds '{args.seeds}' must be whole numbers separated by commas, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0:
        raise LabError(f"--seeds '{args.seeds}' must list at least one seed of 0 or more, e.g. 0,1,2")
    stores = _stores(args, lab, config, not args.quiet)
    rows: list[dict[str, Any]] = []
    print(f"\nArchitectures side by side: {config.hook} layer {config.layer}, d_sae {config.sae.d_sae}, the lab's defaults "
          f"(batch {config.train.batch_size}, {args.epochs or config.train.epochs:g} epochs, lr auto), interleaved step by step.")
    print("  FVU and L0 on held-out tokens; dead (train) = no firing in the last dead_after_tokens training tokens; "
          "dead (held-out) = never fires on the held-out tokens.")
    for domain, store, l0, seed in ((d, s, l0, seed) for d, s in stores.items() for l0 in l0s for seed in seeds):
        seeded = dataclasses.replace(config, seed=seed)
        contenders = [_contender(store, seeded, a, l0, args.epochs) for a in names]
        bar = tqdm(total=sum(c["total"] for c in contenders), desc=f"{domain} L0 {l0}", unit="step",
                   disable=args.quiet, leave=False)
        _train_interleaved(contenders, bar)
        bar.close()
        measured = [_measure(c) for c in contenders]
        ref = next((r for r in measured if r["architecture"] == "topk"), None)
        print(f"\n  {domain} ({store.n_rows - store.val_start:,} held-out tokens), k / target L0 = {l0}, seed {seed}, "
              f"matmul {measured[0]['matmul_dtype']}:")
        print(f"    {'architecture':22s} {'FVU':>7s} {'FVU/topk':>8s} {'L0':>6s} {'dead(train)':>11s} {'dead(held-out)':>14s} "
              f"{'tokens/s':>9s} {'vs topk':>7s}")
        for r in measured:
            r.update({"domain": domain, "l0_target": l0, "seed": seed,
                      "vs_topk_tokens_per_s": r["tokens_per_s"] / ref["tokens_per_s"] if ref else None,
                      "fvu_vs_topk": r["fvu_heldout"] / ref["fvu_heldout"] if ref else None})
            ratio = f"x{r['vs_topk_tokens_per_s']:.2f}" if ref else "-"
            fvu_ratio = f"{r['fvu_vs_topk']:.3f}" if ref else "-"
            print(f"    {r['architecture']:22s} {r['fvu_heldout']:7.4f} {fvu_ratio:>8s} {r['l0_heldout']:6.1f} "
                  f"{r['dead_train']:11.3f} {r['dead_heldout']:14.3f} {r['tokens_per_s']:9,.0f} {ratio:>7s}")
        rows.extend(measured)
    out["architectures"] = rows
    if args.fixed_coefficients:
        out["fixed_coefficients"] = _fixed_coefficients(args, config, stores)


def _fixed_coefficients(args, config, stores) -> list[dict[str, Any]]:
    """JumpReLU's L0 and ReLU's L1 coefficient held fixed (``target_l0 = false``) at each value: how far
    does the coefficient move L0 under Adam (SAELens issues #494/#719 say it barely does)?"""
    try:
        values = [float(v) for v in args.fixed_coefficients.split(",") if v.strip()]
    except ValueError:
        raise LabError(f"--fixed-coefficients '{args.fixed_coefficients}' must be numbers separated by commas, "
                       "e.g. 0.1,1,10,100") from None
    domain, store = next(iter(stores.items()))
    contenders = [_contender(store, config, "jumprelu", 16, args.epochs, f"jumprelu l0_coefficient={v:g}",
                             target_l0=False, l0_coefficient=v) for v in values]
    contenders += [_contender(store, config, "relu", 16, args.epochs, f"relu l1_coefficient={v:g}",
                              target_l0=False, l1_coefficient=v) for v in values]
    bar = tqdm(total=sum(c["total"] for c in contenders), desc=f"{domain} fixed coefficients", unit="step",
               disable=args.quiet, leave=False)
    _train_interleaved(contenders, bar)
    bar.close()
    measured = [_measure(c) for c in contenders]
    print(f"\n  Fixed sparsity coefficients (target_l0 = false), {domain}: L0 as the coefficient grows")
    print(f"    {'contender':34s} {'FVU':>7s} {'L0':>6s} {'dead(train)':>11s}")
    for r in measured:
        print(f"    {r['architecture']:34s} {r['fvu_heldout']:7.4f} {r['l0_heldout']:6.1f} {r['dead_train']:11.3f}")
    return measured
