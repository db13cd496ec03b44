"""The engine's benchmarks (``python -m engine bench train|collect|memory``): figures measured side
by side in one run, printed as ratios.

This machine's speed drifts by ±30 % from minute to minute (a shared VM), so the contenders are
interleaved step by step on the same data rather than run one after the other: whichever side has
seen fewer tokens takes the next step, and each side's own step times are summed.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from core.errors import LabError
from engine.artifacts import collect_for
from engine.bench.reference import ReferenceTopKSAE
from engine.collection.collect import build_sequences, collect_timed_one_pass, collect_timed_per_layer
from engine.collection.models import load_model, resolve_model
from engine.config import DataConfig, ExperimentConfig, TrainConfig
from engine.training.data import ShuffledBatches
from engine.training.trainer import Trainer, init_sae_from_store_stats


def _prose_store(lab, progress: bool):
    config = ExperimentConfig().validate()
    stores = collect_for(config, lab, progress)
    return config, stores["prose"]


def val_fvu(forward, val: torch.Tensor) -> float:
    with torch.no_grad():
        err = 0.0
        for a in range(0, len(val), 8192):
            x = val[a : a + 8192]
            err += float((forward(x) - x).double().pow(2).sum())
        return err / float((val.double() - val.double().mean(0)).pow(2).sum())


def bench_train(args, lab, out: dict) -> None:
    config, store = _prose_store(lab, not args.quiet)
    acts = store.acts(config.hook, config.layer)
    vs = store.val_start
    stats = store.site_stats(config.hook, config.layer)
    val = torch.from_numpy(np.asarray(acts[vs:], dtype=np.float32))

    def ours(dtype: str):
        cfg = TrainConfig(**{**config.train.to_dict(), "epochs": args.epochs or config.train.epochs, "matmul_dtype": dtype})
        sae = init_sae_from_store_stats(store.d_model, config.sae, np.asarray(stats["train_mean"]),
                                        stats["train_mean_sq_norm"], 0)
        batches = ShuffledBatches(acts, 0, vs, cfg.batch_size, 0)
        tr = Trainer(sae, config.sae, cfg, batches, torch.device("cpu"), 0)
        it = batches.iterate(0, tr.total_steps, torch.device("cpu"), scale=float(sae.input_scale))

        def step() -> int:
            s, x = next(it)
            tr.train_step(x, tr.lr_at(s), want_metrics=False)
            return x.shape[0]

        return {"step": step, "fvu": lambda: val_fvu(sae, val), "total": tr.total_steps * cfg.batch_size, "batch": cfg.batch_size}

    def reference(total: int):
        g = torch.Generator().manual_seed(0)
        data = torch.from_numpy(np.asarray(acts[:vs], dtype=np.float32))
        sae = ReferenceTopKSAE(store.d_model, config.sae.d_sae, config.sae.k, 0)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
        state = {"perm": torch.randperm(len(data), generator=g), "pos": 0}
        B = 256

        def step() -> int:
            if state["pos"] + B > len(data):
                state["perm"], state["pos"] = torch.randperm(len(data), generator=g), 0
            batch = data[state["perm"][state["pos"] : state["pos"] + B]]
            state["pos"] += B
            opt.zero_grad()
            loss = (sae(batch) - batch).pow(2).mean()
            loss.backward()
            opt.step()
            with torch.no_grad():
                sae.W_dec.data = sae.W_dec.data / sae.W_dec.data.norm(dim=0, keepdim=True)
            return B

        return {"step": step, "fvu": lambda: val_fvu(sae, val), "total": total, "batch": B}

    lab_fp32 = ours("float32")
    budget = lab_fp32["total"]  # the lab trainer's exact token count; the reference sees as many (±1 batch)
    contenders = {"lab trainer (fp32)": lab_fp32, "reference loop (tutorial)": reference(budget)}
    if not args.no_bf16:
        contenders["lab trainer (bf16 matmul)"] = ours("bfloat16")
    tokens = {k: 0 for k in contenders}
    seconds = {k: 0.0 for k in contenders}

    bar = tqdm(total=sum(c["total"] for c in contenders.values()), desc="bench train", unit="tok",
               disable=args.quiet, leave=False)
    while True:
        pending = [k for k in contenders if tokens[k] < contenders[k]["total"]]
        if not pending:
            break
        k = min(pending, key=lambda n: tokens[n])
        t0 = time.perf_counter()
        n = contenders[k]["step"]()
        seconds[k] += time.perf_counter() - t0
        tokens[k] += n
        bar.update(n)
    bar.close()
    ref = "reference loop (tutorial)"
    rows = []
    for k in contenders:
        rows.append({"contender": k, "batch": contenders[k]["batch"], "tokens": tokens[k], "seconds": seconds[k],
                     "tokens_per_s": tokens[k] / seconds[k], "val_fvu": contenders[k]["fvu"]()})
    ref_tps = next(r["tokens_per_s"] for r in rows if r["contender"] == ref)
    ref_fvu = next(r["val_fvu"] for r in rows if r["contender"] == ref)
    print(f"\nTraining, side by side on the same activations (prose, {config.hook} layer {config.layer}, "
          f"d_sae {config.sae.d_sae}, k {config.sae.k}, L0 = {config.sae.k} for all, "
          f"{budget:,} tokens each = {args.epochs or config.train.epochs:g} epochs):")
    for r in rows:
        r["speedup_vs_reference"] = r["tokens_per_s"] / ref_tps
        r["fvu_vs_reference"] = r["val_fvu"] - ref_fvu
        print(f"  {r['contender']:28s} batch {r['batch']:5d}  {r['tokens_per_s']:>9,.0f} tokens/s  "
              f"x{r['speedup_vs_reference']:.2f}  held-out FVU {r['val_fvu']:.4f}")
    lab_row = rows[0]
    verdict = "met" if lab_row["speedup_vs_reference"] >= 4 and lab_row["val_fvu"] <= ref_fvu else "NOT met"
    print(f"  target (>= 4x the reference's tokens/s at equal or better FVU): {verdict} "
          f"(x{lab_row['speedup_vs_reference']:.2f}, FVU {lab_row['val_fvu']:.4f} vs {ref_fvu:.4f})")
    out["train"] = rows


def bench_collect(args, lab, out: dict) -> None:
    config = ExperimentConfig().validate()
    info = resolve_model(config.model)
    loaded = load_model(info, torch.device("cpu"))
    data = DataConfig(**{**config.data.to_dict(), "domains": config.data.domains,
                         "tokens_per_domain": args.collect_sequences * 126})
    seqs = build_sequences(loaded, config.data.domains[0], data, config.seed)
    sites = [(config.hook, layer) for layer in range(info.n_layers)]
    one, per = 0.0, 0.0
    for _ in range(args.rounds):  # interleaved rounds
        one += collect_timed_one_pass(loaded, seqs, sites, data.batch_size)
        per += collect_timed_per_layer(loaded, seqs, sites, data.batch_size)
    n = seqs.n_rows * args.rounds
    print(f"\nCollection of {len(sites)} layers of {config.hook} ({seqs.n_rows:,} tokens x {args.rounds} interleaved rounds):")
    print(f"  one pass for all layers     {n / one:>9,.0f} tokens/s")
    print(f"  one pass per layer          {n / per:>9,.0f} tokens/s   (each pass stops after its layer)")
    print(f"  ratio                       x{per / one:.2f}")
    out["collect"] = {"one_pass_tokens_per_s": n / one, "per_layer_tokens_per_s": n / per, "ratio": per / one,
                      "layers": len(sites)}


def bench_memory(args, lab, out: dict) -> None:
    """Peak RSS of the default experiment (`python -m engine run`) in a fresh lab, as a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "engine", "--lab", tmp, "-q", "run"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        if proc.returncode != 0:
            raise LabError("the default experiment failed in the memory benchmark: "
                           f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("\nDefault experiment (collect 2 x 100k tokens, all 6 layers; train 2 SAEs; evaluate; analyse), fresh lab:")
    print(f"  wall time {secs:.0f} s, peak memory {peak_mb:,.0f} MB "
          f"(target < 4,096 MB: {'met' if peak_mb < 4096 else 'NOT met'})")
    out["memory"] = {"peak_rss_mb": peak_mb, "seconds": secs}


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")
