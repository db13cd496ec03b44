"""``python -m engine bench trainer``: the training step against this CPU's GEMM limit (issue 17).

Side by side in one run, on the default activations (prose, the default site, d_sae, k, TopK):

- fp32 against bf16 matmuls (``TrainConfig.matmul_dtype``) at batch 2048 and 4096 (``--batches``):
  tokens/s, their ratio, each one's held-out FVU, and each one's share of the ``torch.mm`` limit;
- a share group (``engine.training.group``) of SAEs with k = 48, 24, 16 (``--group-ks``) trained in
  one pass in fp32: the group's share of the fp32 ``torch.mm`` limit;
- the rate of one stacked GEMM (x against the group's concatenated encoders) against the group's
  separate GEMMs, which is what stacking the group's encoders could gain at most.

The share of the limit is the encoder's FLOPs (2 x batch x (d_in + 1) x d_sae per step and SAE)
over the FLOP rate a bare ``torch.mm`` of the same shape and dtype reaches on the same threads in
this run: timed once after every training step (``MMClock``, so under the same load as the steps)
and, for reference, ``engine.bench.sweep.mm_rate``'s best of a few runs. Each contender runs the real loop
(``Trainer.begin`` / ``take_step`` / ``end``, metrics logged every ``log_every_steps``), without
reading batches: every step's batch is gathered before its clock starts. fp32 and bf16 take their
steps in turn (whichever has seen fewer tokens goes next), so a machine whose speed drifts slows
both alike.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from tqdm.auto import tqdm

from engine.bench.measure import _prose_store, val_fvu
from engine.bench.sweep import mm_rate
from engine.config import TrainConfig
from engine.training.data import ShuffledBatches
from engine.training.group import train_together
from engine.training.trainer import Trainer, init_sae_from_store_stats


class MMClock:
    """A bare ``torch.mm`` of the encoder's shape, timed between the training steps: the limit the
    steps are held against, under the same load as they ran (the machine's speed drifts)."""

    def __init__(self, B: int, d: int, n: int, dtype: torch.dtype):
        self.a, self.w = torch.randn(B, d).to(dtype), torch.randn(n, d).to(dtype)
        self.out = torch.empty(B, n, dtype=dtype)
        self.flops, self.seconds = 2.0 * B * d * n, 0.0
        self.count = 0
        torch.mm(self.a, self.w.t(), out=self.out)

    def tick(self) -> None:
        t0 = time.perf_counter()
        torch.mm(self.a, self.w.t(), out=self.out)
        self.seconds += time.perf_counter() - t0
        self.count += 1

    @property
    def rate(self) -> float:
        return self.flops * self.count / max(self.seconds, 1e-12)


def _encoder_flops(trainer: Trainer) -> float:
    sae = trainer.sae
    return 2.0 * trainer.batches.batch_size * (sae.d_in + 1) * sae.d_sae


STAGES = ("encoder_gemm", "select", "forward", "backward", "optimizer", "bookkeeping")


def step_stages(tr: Trainer, label: str, warmup: int = 5, steps: int = 10) -> dict[str, float]:
    """Where a training step's time goes: ``torch.profiler`` over ``steps`` steps (after ``warmup``),
    summing the CPU time of the step's named ranges (``engine.training.trainer._stage``), in ms a step.
    The profiler adds its own cost, so the parts are shares of a somewhat slower step."""
    it = tr.batches.iterate(0, warmup + steps, torch.device("cpu"))
    batches = [x for _, x in it]
    for i, x in enumerate(batches[:warmup]):
        tr.take_step(i, x.clone(), owned=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for i, x in enumerate(batches[warmup:], start=warmup):
            tr.take_step(i, x.clone(), owned=True)
        wall = (time.perf_counter() - t0) / steps * 1e3
    ms = {name: 0.0 for name in STAGES}
    for e in prof.key_averages():
        if e.key.startswith("sae_step."):
            ms[e.key.removeprefix("sae_step.")] = e.cpu_time_total / 1e3 / steps
    ms["step"] = wall
    parts = ", ".join(f"{name.replace('_', ' ')} {ms[name]:.1f}" for name in STAGES)
    print(f"  {label} step at batch {tr.batches.batch_size}, k {tr.sae.k} (profiled, ms): {ms['step']:.1f} = {parts}", flush=True)
    return ms


def bench_trainer(args, lab, out: dict) -> None:
    threads = args.threads or torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _bench(args, lab, out, threads)
    finally:
        torch.set_num_threads(before)


def _bench(args, lab, out: dict, threads: int) -> None:
    config, store = _prose_store(lab, not args.quiet)
    acts = store.acts(config.hook, config.layer)
    vs = store.val_start
    stats = store.site_stats(config.hook, config.layer)
    val = torch.from_numpy(np.asarray(acts[vs:], dtype=np.float32))
    epochs = args.epochs or config.train.epochs
    d_in = store.d_model

    def trainer(dtype: str, batch: int, k: int | None = None) -> Trainer:
        sae_cfg = replace(config.sae, k=k) if k else config.sae
        cfg = TrainConfig(**{**config.train.to_dict(), "epochs": epochs, "matmul_dtype": dtype, "batch_size": batch})
        sae = init_sae_from_store_stats(d_in, sae_cfg, np.asarray(stats["train_mean"]), stats["train_mean_sq_norm"], 0)
        tr = Trainer(sae, sae_cfg, cfg, ShuffledBatches(acts, 0, vs, batch, 0), torch.device("cpu"), 0)
        tr.begin(resume=False, own_rng=True)
        return tr

    batches = [int(b) for b in str(args.batches).split(",") if b.strip()]
    print(f"\ntrainer bench: prose, {config.hook} layer {config.layer}, d_in {d_in}, d_sae {config.sae.d_sae}, "
          f"k {config.sae.k}, {config.sae.architecture}, {epochs:g} epochs, {threads} thread(s)", flush=True)
    rows = []
    for B in batches:
        pair = {"float32": trainer("float32", B), "bfloat16": trainer("bfloat16", B)}
        seconds = dict.fromkeys(pair, 0.0)
        clocks = {name: MMClock(B, d_in + 1, config.sae.d_sae, getattr(torch, name)) for name in pair}
        steps = pair["float32"].total_steps
        bar = tqdm(total=2 * steps, desc=f"fp32 vs bf16, batch {B}", unit="step", disable=args.quiet, leave=False)
        for step, x in pair["float32"].batches.iterate(0, steps, torch.device("cpu")):
            for name in (("float32", "bfloat16") if step % 2 == 0 else ("bfloat16", "float32")):
                xi = x.clone()
                t0 = time.perf_counter()
                pair[name].take_step(step, xi, owned=True)
                seconds[name] += time.perf_counter() - t0
                clocks[name].tick()
                bar.update(1)
        bar.close()
        for name, tr in pair.items():
            t0 = time.perf_counter()
            tr.end()
            seconds[name] += time.perf_counter() - t0
        limits = {name: clocks[name].rate for name in pair}
        best = {name: mm_rate(B, d_in + 1, config.sae.d_sae, getattr(torch, name), threads) for name in pair}
        row = {"batch": B, "steps": steps, "tokens": steps * B}
        for name, tr in pair.items():
            rate = _encoder_flops(tr) * steps / seconds[name]
            row[name] = {"tokens_per_s": steps * B / seconds[name], "seconds": seconds[name], "val_fvu": val_fvu(tr.sae, val),
                         "encoder_flops_per_s": rate, "mm_flops_per_s": limits[name], "share_of_mm": rate / limits[name],
                         "mm_best_flops_per_s": best[name], "share_of_best_mm": rate / best[name]}
        f32, b16 = row["float32"], row["bfloat16"]
        row["speedup"] = b16["tokens_per_s"] / f32["tokens_per_s"]
        row["fvu_rel_diff"] = (b16["val_fvu"] - f32["val_fvu"]) / f32["val_fvu"]
        rows.append(row)
        print(f"  batch {B:5d}  bf16/fp32 x{row['speedup']:.2f}   held-out FVU fp32 {f32['val_fvu']:.4f} "
              f"bf16 {b16['val_fvu']:.4f} ({row['fvu_rel_diff']:+.2%})", flush=True)
        for name, label in (("float32", "fp32"), ("bfloat16", "bf16")):
            r = row[name]
            print(f"    {label}  {r['tokens_per_s']:>8,.0f} tokens/s  encoder {r['encoder_flops_per_s'] / 1e9:4.0f} GFLOP/s = "
                  f"{r['share_of_mm']:4.0%} of the {label} torch.mm limit ({r['mm_flops_per_s'] / 1e9:.0f} GFLOP/s timed "
                  f"between the steps; {r['share_of_best_mm']:.0%} of mm_rate's best {r['mm_best_flops_per_s'] / 1e9:.0f})")
    ok = all(r["speedup"] >= 2.5 and abs(r["fvu_rel_diff"]) <= 0.01 for r in rows)
    print(f"  target (a) (bf16 >= 2.5x fp32's tokens/s at held-out FVU within 1 %): {'met' if ok else 'NOT met'} "
          f"({', '.join('x%.2f at batch %d' % (r['speedup'], r['batch']) for r in rows)})")
    out["trainer"] = {"threads": threads, "epochs": epochs, "dtypes": rows}
    out["trainer"]["stages"] = {name: step_stages(trainer(name, batches[-1]), name) for name in ("float32", "bfloat16")}

    # -- a share group in fp32 -------------------------------------------------------------------
    ks = [int(k) for k in str(args.group_ks).split(",") if k.strip()]
    B = batches[0]
    group = [trainer("float32", B, k) for k in ks]

    def member(tr: Trainer):
        while not tr.done_training:
            step, x = yield tr
            tr.take_step(step, x)
        return tr.end()

    # The time spent gathering the group's batches is left out, as for the pairs above.
    real_batches = group[0].batches
    gather = {"seconds": 0.0}
    clock = MMClock(B, d_in + 1, config.sae.d_sae, torch.float32)

    class Timed:
        def __getattr__(self, name):
            return getattr(real_batches, name)

        def iterate(self, start, total, device):
            it = real_batches.iterate(start, total, device)
            while True:
                for _ in group:  # one bare GEMM per member's step, left out of the group's time
                    clock.tick()
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    gather["seconds"] += time.perf_counter() - t
                yield item

    group[0].batches = Timed()  # train_together reads the first member's batches
    t0 = time.perf_counter()
    results = train_together([member(tr) for tr in group], torch.device("cpu"))
    seconds = time.perf_counter() - t0 - gather["seconds"] - clock.seconds
    group[0].batches = real_batches
    for r in results:
        if isinstance(r, BaseException):
            raise r
    flops = sum(_encoder_flops(tr) * tr.total_steps for tr in group)
    limit = clock.rate
    best = mm_rate(B, d_in + 1, config.sae.d_sae, torch.float32, threads)
    share = flops / seconds / limit
    fvus = [val_fvu(tr.sae, val) for tr in group]
    print(f"  share group of {len(ks)} (k {'/'.join(map(str, ks))}, fp32, batch {B}, one pass): "
          f"{group[0].total_steps * B / seconds:,.0f} tokens/s for the group = encoder {flops / seconds / 1e9:.0f} GFLOP/s = "
          f"{share:.0%} of the fp32 torch.mm limit ({limit / 1e9:.0f} GFLOP/s timed between the steps; "
          f"{flops / seconds / best:.0%} of mm_rate's best {best / 1e9:.0f}); held-out FVU "
          f"{', '.join(f'{f:.4f}' for f in fvus)}")
    print(f"  target (b) (fp32 group >= 70 % of the torch.mm limit): {'met' if share >= 0.7 else 'NOT met'} ({share:.0%})")

    # -- one stacked GEMM for the group's encoders, against its separate GEMMs ---------------------
    n = config.sae.d_sae
    stacked, separate = {}, {}
    for name in ("float32", "bfloat16"):
        one = MMClock(B, d_in + 1, n * len(ks), getattr(torch, name))
        each = MMClock(B, d_in + 1, n, getattr(torch, name))
        end = time.perf_counter() + 3.0
        while time.perf_counter() < end:  # interleaved: one stacked product, then the separate ones
            one.tick()
            for _ in ks:
                each.tick()
        stacked[name], separate[name] = one.rate, each.rate
    print(f"  one stacked GEMM [{B} x {d_in + 1}] x [{d_in + 1} x {n * len(ks)}] against {len(ks)} of "
          f"[{d_in + 1} x {n}], interleaved: fp32 {stacked['float32'] / 1e9:.0f} vs {separate['float32'] / 1e9:.0f} GFLOP/s "
          f"(x{stacked['float32'] / separate['float32']:.2f}), bf16 {stacked['bfloat16'] / 1e9:.0f} vs "
          f"{separate['bfloat16'] / 1e9:.0f} GFLOP/s (x{stacked['bfloat16'] / separate['bfloat16']:.2f})")
    out["trainer"]["group"] = {"ks": ks, "batch": B, "seconds": seconds, "encoder_flops_per_s": flops / seconds,
                               "mm_flops_per_s": limit, "share_of_mm": share, "mm_best_flops_per_s": best, "val_fvu": fvus,
                               "stacked_mm_flops_per_s": stacked, "separate_mm_flops_per_s": separate}
