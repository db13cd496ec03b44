"""Training loop for the lab's SAEs.

What it does, and why (Gao et al. 2024 and the reference tools):
- decoder rows kept at unit norm, with the gradient component parallel to each row removed before
  the step (so Adam's update does not fight the renormalisation);
- encoder initialised as the decoder's transpose, b_dec at the data mean;
- AuxK: the top ``aux_k`` *dead* latents reconstruct the residual error (coefficient 1/32), which
  keeps latents from dying (aux_k = min(d_in / 2, 4k));
- linear learning-rate warm-up, then linear decay to zero over the last ``decay_fraction``;
- inputs scaled to mean squared norm d_in, folded back into the weights on save;
- a sparse backward (``sparse_ops``): gradients are computed from the k active latents only;
- bf16 matmuls where the CPU has them (``matmul_dtype``): the encoder's GEMM and the selection run
  on bf16, the selected entries get exact fp32 values (``_exact_pre``). Where a step's time goes
  (the step's named ranges, ``_stage``) and how close it gets to the ``torch.mm`` limit:
  ``python -m engine bench trainer``. On this 2-core EPYC (1 thread, batch 4096, k 16) a bf16 step
  is ~81 ms against fp32's ~116: GEMM 31 ms, top-k selection 23 ms (torch's CPU topk over the group
  maxima, ~5 us a row; a numba quickselect kernel was only 1.1-1.5x faster and was not added),
  sparse backward 12 ms. Running the step in row blocks that stay in cache gained nothing either.

What differs between architectures (selection, activation, loss, penalty, thresholds) is asked of
``sae.arch`` (``engine.training.architectures``); this loop never tests an architecture's name.

The loop knows nothing of databases or queues: it reports through ``TrainHooks`` and checkpoints
to a path it is given, so a job runner (local worker or, later, a remote executor) can wrap it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from core.errors import writing_to
from engine.config import SAEConfig, TrainConfig
from engine.device import cpu_has_fast_bf16
from engine.training import architectures
from engine.training.architectures import Calibration, StepStats
from engine.training.data import ShuffledBatches
from engine.training.sae import SparseAutoencoder, auto_lr
from engine.training.sparse_ops import SparseEncodeGrad, make_pattern, row_offsets, select_masked_topk, sparse_decode


class TrainingCancelled(Exception):
    """A cancel request arrived; the caller marks the run KILLED."""


@dataclass
class TrainHooks:
    """How the loop talks to the outside world. Every hook is optional."""

    on_log: Callable[[int, int, dict[str, float]], None] | None = None  # (step, tokens, metrics)
    should_stop: Callable[[], bool] | None = None
    before_checkpoint: Callable[[int], None] | None = None  # e.g. make logged metrics durable first
    on_checkpoint: Callable[[int], None] | None = None


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    tokens_per_second: float
    final_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int = 0


def _stage(name: str) -> torch.profiler.record_function:
    """A named range of the step for ``torch.profiler`` (``python -m engine bench trainer`` sums them
    into where a step's time goes); about a microsecond when no profiler runs."""
    return torch.profiler.record_function("sae_step." + name)


def resolve_matmul_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "bfloat16":
        return torch.bfloat16
    if setting == "float32":
        return torch.float32
    # auto: bf16 only where the hardware makes it fast (GPU, or a CPU with AMX / AVX512-BF16).
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return torch.float32


class Trainer:
    def __init__(
        self,
        sae: SparseAutoencoder,
        sae_cfg: SAEConfig,
        cfg: TrainConfig,
        batches: ShuffledBatches,
        device: torch.device,
        seed: int = 0,
        checkpoint_path: Path | None = None,
        hooks: TrainHooks | None = None,
        progress: bool = False,
    ):
        self.sae, self.sae_cfg, self.cfg = sae.to(device), sae_cfg, cfg
        self.batches, self.device, self.seed = batches, device, seed
        self.checkpoint_path = checkpoint_path
        self.hooks = hooks or TrainHooks()
        self.progress = progress
        self.lr = cfg.lr if cfg.lr is not None else auto_lr(sae.d_sae)
        # SAELens uses d_in / 2; capping at 4k costs nothing in held-out FVU and keeps the dead
        # latents' path from costing 12x the live one at k = 16 (README, training notes).
        self.aux_k = cfg.aux_k if cfg.aux_k is not None else max(1, min(sae.d_in // 2, 4 * sae.k))
        self.matmul_dtype = resolve_matmul_dtype(cfg.matmul_dtype, device)
        self.total_steps = max(1, math.ceil(cfg.epochs * batches.batches_per_epoch))
        fused = device.type in ("cpu", "cuda")
        scales = sae.arch.lr_scale
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for name, p in sae.named_parameters():
            groups.setdefault(float(scales.get(name, 1.0)), []).append(p)
        self.opt = torch.optim.Adam([{"params": ps, "lr_scale": sc} for sc, ps in groups.items()], lr=self.lr,
                                    betas=(0.9, 0.999), fused=fused)
        self.step = 0
        self.tokens_since_fired = torch.zeros(sae.d_sae, dtype=torch.long, device=device)
        self._buffers: dict[str, torch.Tensor] = {}
        self._fresh = True  # the first batch may initialise data-dependent parameters (architectures)

    def _buffer(self, name: str, shape: tuple[int, ...], fill_last_col: float | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Persistent work buffers: reusing warm memory instead of fresh 30 MB allocations each step
        avoids the page faults that otherwise cost about a quarter of the encoder's time."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = torch.empty(shape, device=self.device, dtype=dtype)
            if fill_last_col is not None:
                buf[:, -1] = fill_last_col
            self._buffers[name] = buf
        return buf

    def _encoder_pre(self, xc: torch.Tensor) -> torch.Tensor:
        """pre = xc @ W_enc + b_enc as one GEMM: the bias rides along as an extra input column of ones
        (a separate bias add is a full extra pass over the [batch, d_sae] result).

        In bf16 (``matmul_dtype``) the inputs are cast straight into persistent bf16 buffers and the
        result stays bf16: selection compares bf16 values (the same comparisons as on their exact
        fp32 conversions), and the selected entries get fp32 values from ``_exact_pre``. Converting
        the whole [batch, d_sae] result to fp32, as this did before, was a pass over 50 MB a step."""
        sae = self.sae
        B, d = xc.shape
        md = self.matmul_dtype
        tag = "" if md == torch.float32 else "_lo"
        x_aug = self._buffer("x_aug" + tag, (B, d + 1), fill_last_col=1.0, dtype=md)
        w_aug = self._buffer("w_aug" + tag, (sae.d_sae, d + 1), dtype=md)
        x_aug[:, :d].copy_(xc)
        w_aug[:, :d].copy_(sae.W_enc_rows)
        w_aug[:, d].copy_(sae.b_enc)
        return torch.mm(x_aug, w_aug.t(), out=self._buffer("pre" + tag, (B, sae.d_sae), dtype=md))

    # -- schedule ---------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        warm = max(1, min(self.cfg.warmup_steps, self.total_steps // 10 or 1))
        if step < warm:
            return self.lr * (step + 1) / warm
        decay_start = int(self.total_steps * (1 - self.cfg.decay_fraction))
        if self.cfg.decay_fraction > 0 and step >= decay_start:
            return self.lr * max(0.0, (self.total_steps - step) / max(1, self.total_steps - decay_start))
        return self.lr

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if not self.checkpoint_path:
            return
        if self.hooks.before_checkpoint:
            self.hooks.before_checkpoint(self.step)
        state = {
            "sae": self.sae.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "tokens_since_fired": self.tokens_since_fired.cpu(),
            "torch_rng": torch.get_rng_state(),
            "total_steps": self.total_steps,
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        try:
            with writing_to(tmp):  # a full disk: one DiskFullError, not torch's "unexpected pos"
                torch.save(state, tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.checkpoint_path)
        if self.hooks.on_checkpoint:
            self.hooks.on_checkpoint(self.step)

    def load_checkpoint(self) -> bool:
        if not (self.checkpoint_path and self.checkpoint_path.exists()):
            return False
        try:
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        except Exception:
            return False  # a checkpoint torn by a kill is ignored: train from scratch
        self.sae.load_state_dict(state["sae"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        self.tokens_since_fired = state["tokens_since_fired"].to(self.device)
        torch.set_rng_state(state["torch_rng"])
        self._fresh = False
        return True

    # -- one step ----------------------------------------------------------------------------------

    def _exact_pre(self, xc: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """fp32 pre-activations at the selected entries (after a bf16 selection)."""
        pattern = torch.sparse_csr_tensor(row_offsets(rows, xc.shape[0]), cols, torch.zeros(len(cols), device=xc.device),
                                          (xc.shape[0], self.sae.d_sae), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, xc, self.sae.W_enc_rows.t(), beta=0.0).values() + self.sae.b_enc[cols]

    def train_step(self, x: torch.Tensor, lr: float, want_metrics: bool = True) -> dict[str, float]:
        """One optimiser step on a batch already multiplied by ``input_scale``."""
        sae = self.sae
        B, d = x.shape
        for g in self.opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        arch = sae.arch
        with torch.no_grad(), _stage("encoder_gemm"):
            xc = x - sae.b_dec
            pre = self._encoder_pre(xc)
            if self._fresh:
                self._fresh = False
                if self.step == 0:
                    arch.init_from_batch(sae, pre)
                    pre = self._encoder_pre(xc)
        with torch.no_grad(), _stage("select"):
            dead = self.tokens_since_fired >= self.cfg.dead_after_tokens
            n_dead = int(dead.sum())
            if n_dead and arch.revive(sae, pre, dead):
                pre = self._encoder_pre(xc)
            rows, cols, pv = arch.select_train(sae, pre)
            if self.matmul_dtype != torch.float32:
                pv = self._exact_pre(xc, rows, cols)
            aux = None
            if n_dead and self.cfg.aux_coefficient > 0 and arch.uses_auxk:
                aux = select_masked_topk(pre, dead, min(self.aux_k, n_dead))
                if self.matmul_dtype != torch.float32:
                    aux = (aux[0], aux[1], self._exact_pre(xc, aux[0], aux[1]))
            del pre
            pattern = make_pattern(rows, cols, B, sae.d_sae)
            aux_pattern = make_pattern(aux[0], aux[1], B, sae.d_sae) if aux is not None else None
        with _stage("forward"):
            vals = arch.train_values(sae, pv, xc, pattern)
            loss, mse, err = arch.reconstruction(sae, vals, pattern, xc)
            penalty = arch.penalty(sae, vals, pv, pattern)
            if penalty is not None:
                loss = loss + penalty
            l1 = vals.sum() / B
            aux_loss = None
            if aux is not None:
                avals = torch.relu(SparseEncodeGrad.apply(aux[2], xc, sae.W_enc_rows, sae.b_enc, sae.b_dec, aux_pattern))
                # The dead latents learn to explain the residual x - x_hat = -err.
                e_hat = sparse_decode(avals, sae.W_dec, aux_pattern)
                denom = (err - err.mean(0)).pow(2).sum().clamp_min(1e-12)
                aux_loss = (e_hat + err).pow(2).sum() / denom
                loss = loss + self.cfg.aux_coefficient * aux_loss
        self.opt.zero_grad(set_to_none=True)
        with _stage("backward"):
            loss.backward()
        with torch.no_grad(), _stage("optimizer"):
            W, G = sae.W_dec, sae.W_dec.grad
            if G is not None:
                G -= (G * W).sum(-1, keepdim=True) * W  # remove the part that only changes row norms
            self.opt.step()
            sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        with torch.no_grad(), _stage("bookkeeping"):
            v = vals.detach()
            active = v > 0
            n_active = int(active.sum())
            fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=x.device)
            fired[cols[active]] = True
            self.tokens_since_fired += B
            self.tokens_since_fired[fired] = 0
            dead_now = self.tokens_since_fired >= self.cfg.dead_after_tokens
            extra = arch.after_step(sae, StepStats(cols, v, B, n_active / B, dead_now))
            if not want_metrics:
                return {}
            sq_err = float(mse) * B * d
            variance = float((xc - xc.mean(0)).pow(2).sum().clamp_min(1e-12))
            dead_now = int(dead_now.sum())
        return {
            "loss": float(loss.detach()),
            "mse": float(mse.detach()),
            "fvu": sq_err / variance,
            "l0": n_active / B,
            "l1": float(l1.detach()),
            "aux_loss": float(aux_loss.detach()) if aux_loss is not None else 0.0,
            "dead_frac": dead_now / sae.d_sae,
            "lr": lr,
            **extra,
        }

    @torch.no_grad()
    def finalize(self) -> dict[str, float]:
        """The architecture's end-of-training step (e.g. BatchTopK's threshold calibration), given
        training-split batches (the first epoch's order) and their pre-activations with the final
        weights; the architecture stops reading when it has seen enough."""
        sae = self.sae
        scale = float(sae.input_scale)

        def batches():
            for x in self.batches._epoch(0, scale):
                xc = x.to(self.device) - sae.b_dec
                yield Calibration(xc, self._encoder_pre(xc).float())

        return sae.arch.finalize(sae, batches())

    # -- the loop ---------------------------------------------------------------------------------
    # ``run`` is ``begin``, ``take_step`` for every batch, ``end``. A group of SAEs that share their
    # activations (``engine.training.group``) drives the same three with one batch gather per step.
    def begin(self, resume: bool = True, own_rng: bool = False) -> None:
        """Resume from the checkpoint if there is one, seed, and start the clocks.

        ``own_rng``: this trainer keeps its own torch RNG state between steps, so it draws the same
        numbers whether it trains alone or interleaved with other trainers."""
        self.resumed_from = 0
        self.gather_seconds = 0.0  # reading batches for this trainer, when a group reads them (engine.training.group)
        if resume and self.load_checkpoint():
            self.resumed_from = self.step
        torch.manual_seed(self.seed)
        self._rng = torch.get_rng_state() if own_rng else None
        self.sae.train()
        self._t0 = time.perf_counter()
        self._last_ckpt = time.monotonic()
        self._metrics: dict[str, float] = {}
        self._bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", disable=not self.progress,
                         leave=False)
        self._window_t, self._window_tokens = time.perf_counter(), 0

    @property
    def done_training(self) -> bool:
        return self.step >= self.total_steps

    def take_step(self, step: int, x: torch.Tensor, owned: bool = False) -> None:
        """Train on batch ``step`` (``x``: raw rows; scaled here, in place when ``owned``)."""
        if self.hooks.should_stop and self.hooks.should_stop():
            self.save_checkpoint()
            raise TrainingCancelled(f"cancelled at step {step}")
        scale = float(self.sae.input_scale)
        x = (x.mul_(scale) if owned else x * scale) if scale != 1.0 else x
        if self._rng is not None:
            torch.set_rng_state(self._rng)
        B = x.shape[0]
        log_now = (step + 1) % self.cfg.log_every_steps == 0 or step + 1 == self.total_steps
        self._metrics = self.train_step(x, self.lr_at(step), want_metrics=log_now) or self._metrics
        if self._rng is not None:
            self._rng = torch.get_rng_state()
        self.step = step + 1
        self._window_tokens += B
        self._bar.update(1)
        if log_now:
            metrics = self._metrics
            now = time.perf_counter()
            metrics["tokens_per_s"] = self._window_tokens / max(now - self._window_t, 1e-9)
            self._window_t, self._window_tokens = now, 0
            self._bar.set_postfix(loss=f"{metrics['loss']:.4f}", fvu=f"{metrics['fvu']:.3f}", l0=f"{metrics['l0']:.1f}",
                                  dead=f"{metrics['dead_frac']:.2f}")
            if self.hooks.on_log:
                self.hooks.on_log(self.step, self.step * B, metrics)
        if self.checkpoint_path and time.monotonic() - self._last_ckpt >= self.cfg.checkpoint_every_seconds:
            self.save_checkpoint()
            self._last_ckpt = time.monotonic()

    def end(self) -> TrainResult:
        """Finalize (the architecture's calibration), checkpoint, and report."""
        self._bar.close()
        if self._rng is not None:
            torch.set_rng_state(self._rng)
        metrics = self._metrics
        metrics.update(self.finalize())
        metrics["dead_frac_train"] = float((self.tokens_since_fired >= self.cfg.dead_after_tokens).float().mean())
        self.save_checkpoint()  # a kill during evaluation resumes here instead of retraining
        self.sae.eval()
        seconds = time.perf_counter() - self._t0
        B = self.batches.batch_size
        trained = (self.step - self.resumed_from) * B
        return TrainResult(self.step, self.step * B, seconds, trained / max(seconds, 1e-9), metrics, self.resumed_from)

    def run(self, resume: bool = True) -> TrainResult:
        self.begin(resume)
        for step, x in self.batches.iterate(self.step, self.total_steps, self.device):
            self.take_step(step, x, owned=True)
        return self.end()


def init_sae_from_store_stats(d_in: int, sae_cfg: SAEConfig, mean: np.ndarray, mean_sq_norm: float,
                              seed: int) -> SparseAutoencoder:
    """A fresh SAE initialised from the training data's mean and scale."""
    options = architectures.get(sae_cfg.architecture).options_from(sae_cfg)
    sae = SparseAutoencoder(d_in, sae_cfg.d_sae, sae_cfg.architecture, sae_cfg.k, options)
    scale = math.sqrt(d_in / max(mean_sq_norm, 1e-12))
    g = torch.Generator().manual_seed(seed)
    sae.init_weights(g, torch.as_tensor(mean, dtype=torch.float32), scale)
    return sae


def describe_training(trainer: Trainer) -> dict[str, Any]:
    """The resolved training settings saved with a run."""
    return {
        "lr": trainer.lr,
        "aux_k": trainer.aux_k,
        "matmul_dtype": str(trainer.matmul_dtype).replace("torch.", ""),
        "total_steps": trainer.total_steps,
        "batch_size": trainer.batches.batch_size,
        "train_rows": trainer.batches.n_rows,
        "input_scale": float(trainer.sae.input_scale),
    }
