"""Recording a run in the lab database: the local wrapper around ``engine.runs.prepare_run`` / ``complete_run``.

Everything goes through ``db.BufferedWriter``: step metrics are buffered and flushed in batches,
and a busy database never stops training (rows are spooled in the run's folder and replayed).
"""

from __future__ import annotations

import json
import time
from typing import Any

from core.errors import LabError
from core.lab import Lab, code_version
from db import BufferedWriter, Op, utcnow, write_now
from engine.run_owner import Owner
from engine.runs import RunOutcome, RunSpec

STEP_METRICS = ("loss", "mse", "fvu", "l0", "l1", "aux_loss", "dead_frac", "lr", "tokens_per_s")
EVAL_COLUMNS = ("n_tokens", "mse", "fvu", "r2", "cosine", "l0", "l1", "dead_frac", "l2_ratio", "transfer_ratio")
SPLICE_COLUMNS = ("kind", "n_sequences", "ce_clean", "ce_sae", "ce_zero", "ce_recovered", "kl_sae", "kl_zero",
                  "emb_cos_sae", "emb_cos_zero", "emb_cos_recovered", "note")


class RunRecorder:
    def __init__(self, lab: Lab, spec: RunSpec, heartbeat_seconds: float = 5.0):
        self.lab, self.spec = lab, spec
        self.writer = BufferedWriter(lab, lab.run_dir(spec.run_id))
        self.heartbeat_seconds = heartbeat_seconds
        self.last_heartbeat = 0.0
        self.started = False
        self.owner = Owner.current()

    def run_row(self, resolved: dict[str, Any] | None) -> dict[str, Any]:
        c = self.spec.config
        now = utcnow()
        return {
            "run_id": self.spec.run_id,
            "group_id": self.spec.group_id,
            "name": self.spec.name,
            "status": "RUNNING",
            "created_at": now,
            "started_at": now,
            "heartbeat_at": now,
            "model": c.model,
            "hook": c.hook,
            "layer": c.layer,
            "architecture": c.sae.architecture,
            "d_in": int((resolved or {}).get("model", {}).get("d_model", 0)),
            "d_sae": c.sae.d_sae,
            "k": c.sae.k,
            "train_domain": self.spec.train_domain,
            "domains": c.domain_names,
            "seed": c.seed,
            "tokens_per_domain": c.data.tokens_per_domain,
            "config": json.dumps(resolved or {"experiment": c.to_dict()}, sort_keys=True),
            "code_version": code_version(),
            "device": (resolved or {}).get("device"),
            "artifact_dir": self.lab.relative(self.lab.run_dir(self.spec.run_id)),
            "tags": list(self.spec.tags),
            "sweep_id": self.spec.sweep_id,
            **self.owner.columns(),
        }

    def start(self, resolved: dict[str, Any]) -> None:
        """Insert (or, when resuming, refresh) the run's row as RUNNING; written right away."""
        row = self.run_row(resolved)
        self.writer.insert("runs", row, on_conflict="ignore")
        self.writer.update("runs", {"run_id": self.spec.run_id},
                           {"status": "RUNNING", "heartbeat_at": row["heartbeat_at"], "ended_at": None, "error": None,
                            "config": row["config"], "d_in": row["d_in"], "device": row["device"], **self.owner.columns()})
        self.writer.flush(wait_seconds=30)
        self.started = True

    def log(self, step: int, tokens: int, metrics: dict[str, float]) -> None:
        now = utcnow()
        rows = [[self.spec.run_id, step, tokens, name, float(metrics[name]), now] for name in STEP_METRICS if name in metrics]
        self.writer.insert_many("step_metrics", ["run_id", "step", "tokens", "name", "value", "logged_at"], rows)
        if time.monotonic() - self.last_heartbeat >= self.heartbeat_seconds:
            self.heartbeat()
        self.writer.maybe_flush()

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()
        self.writer.update("runs", {"run_id": self.spec.run_id}, {"heartbeat_at": utcnow()})

    def finish(self, outcome: RunOutcome) -> None:
        now = utcnow()
        rid = self.spec.run_id
        self.record_evaluation(outcome.evals, outcome.splices, outcome.quality, now)
        self.writer.insert("artifacts", {"run_id": rid, "name": "sae", "kind": "saelens", "path": outcome.sae_dir,
                                         "bytes": _folder_bytes(self.lab.root / outcome.sae_dir), "created_at": now},
                           on_conflict="replace")
        self.writer.update("runs", {"run_id": rid}, {"status": "FINISHED", "ended_at": now, "heartbeat_at": now})
        self.writer.flush(wait_seconds=30)

    def record_evaluation(self, evals: list[dict], splices: list[dict], quality: dict, now=None) -> None:
        now = now or utcnow()
        rid, train_domain = self.spec.run_id, self.spec.train_domain
        for e in evals:
            self.writer.insert("eval_results", {"run_id": rid, "eval_domain": e["eval_domain"], "train_domain": train_domain,
                                                **{c: e.get(c) for c in EVAL_COLUMNS}, "evaluated_at": now},
                               on_conflict="replace")
        for s in splices:
            self.writer.insert("splice_results", {"run_id": rid, "eval_domain": s["eval_domain"],
                                                  **{c: s.get(c) for c in SPLICE_COLUMNS}, "evaluated_at": now},
                               on_conflict="replace")
        if quality:
            points = ("reconstruction_points", "sparsity_points", "interpretability_points", "score", "rating")
            self.writer.insert("quality_scores", {"run_id": rid, **{k: quality[k] for k in points},
                                                  "details": json.dumps(quality["details"]), "scored_at": now},
                               on_conflict="replace")

    def end(self, status: str, error: str | None = None) -> bool:
        """Record how the run ended; False when that could not be written (a full disk): the run then
        stays RUNNING with a dead owner until the next command that writes to the lab marks it FAILED."""
        now = utcnow()
        self.writer.update("runs", {"run_id": self.spec.run_id}, {"status": status, "ended_at": now, "error": error})
        try:
            return self.writer.flush(wait_seconds=30)
        except LabError:
            return False

    def close(self) -> None:
        self.writer.close()


def _folder_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def annotate_run(lab: Lab, run_id: str, tags: list[str] | None = None, notes: str | None = None) -> None:
    """A researcher's tags and notes on a run (the app's editable run table)."""
    values: dict[str, Any] = {}
    if tags is not None:
        clean = sorted({t.strip() for t in tags if t and t.strip()})
        if any(len(t) > 64 for t in clean):
            raise LabError("a tag is longer than 64 characters: shorten it")
        values["tags"] = clean
    if notes is not None:
        if len(notes) > 20_000:
            raise LabError("notes are longer than 20,000 characters: shorten them or keep them in a findings card")
        values["notes"] = notes
    if values:
        write_now(lab, [Op("update", "runs", where={"run_id": run_id}, values=values)])
