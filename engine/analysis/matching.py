"""Following a feature across runs: each feature's best counterpart in another run by decoder cosine.

Decoder rows are the directions features write, and they live in the model's activation space,
so any two runs with the same input width can be matched -- a different k, dictionary size or
seed at the same site, or (more loosely) a neighbouring layer. A match is ``mutual`` when each
feature is the other's best: those are the one-to-one correspondences a sweep can be read by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from core.errors import LabError
from core.lab import Lab
from db import transaction, utcnow
from engine.artifacts import load_run_sae

BLOCK = 2048


@dataclass
class Matches:
    best: np.ndarray  # [Fa] index in run b
    cosine: np.ndarray  # [Fa]
    mutual: np.ndarray  # [Fa] bool

    def summary(self) -> dict[str, float]:
        return {
            "features": int(len(self.best)),
            "mean_cosine": float(self.cosine.mean()) if len(self.cosine) else float("nan"),
            "share_above_0_9": float((self.cosine >= 0.9).mean()) if len(self.cosine) else 0.0,
            "share_above_0_7": float((self.cosine >= 0.7).mean()) if len(self.cosine) else 0.0,
            "share_mutual": float(self.mutual.mean()) if len(self.mutual) else 0.0,
        }


@torch.inference_mode()
def match_decoders(W_a: torch.Tensor, W_b: torch.Tensor) -> Matches:
    if W_a.shape[1] != W_b.shape[1]:
        raise LabError(f"cannot match runs of different widths ({W_a.shape[1]} vs {W_b.shape[1]}): "
                       "match runs of the same model at the same kind of hook point")
    A = torch.nn.functional.normalize(W_a.float(), dim=1)
    B = torch.nn.functional.normalize(W_b.float(), dim=1)
    best = torch.empty(A.shape[0], dtype=torch.long)
    cos = torch.empty(A.shape[0])
    col_best = torch.full((B.shape[0],), -2.0)
    col_arg = torch.zeros(B.shape[0], dtype=torch.long)
    for a in range(0, A.shape[0], BLOCK):  # blocks of rows: memory stays at BLOCK x Fb
        s = A[a : a + BLOCK] @ B.t()
        v, i = s.max(1)
        best[a : a + BLOCK], cos[a : a + BLOCK] = i, v
        cv, ci = s.max(0)
        better = cv > col_best
        col_best[better] = cv[better]
        col_arg[better] = ci[better] + a
    mutual = col_arg[best] == torch.arange(A.shape[0])
    return Matches(best.numpy(), cos.numpy(), mutual.numpy())


def match_runs(lab: Lab, run_a: str, run_b: str, store: bool = True) -> Matches:
    """Match run_a's features to run_b's; stored in ``feature_matches`` (replacing an earlier match)."""
    m = match_decoders(load_run_sae(lab, run_a).W_dec.detach(), load_run_sae(lab, run_b).W_dec.detach())
    if store:
        n = len(m.best)
        table = pa.table({
            "run_a": pa.array([run_a] * n, pa.string()), "run_b": pa.array([run_b] * n, pa.string()),
            "feature_a": pa.array(np.arange(n, dtype=np.int32)), "feature_b": pa.array(m.best.astype(np.int32)),
            "cosine": pa.array(m.cosine.astype(np.float64)), "mutual": pa.array(m.mutual),
            "created_at": pa.array([utcnow()] * n, pa.timestamp("us")),
        })
        with transaction(lab) as con:
            con.execute("DELETE FROM feature_matches WHERE run_a = ? AND run_b = ?", [run_a, run_b])
            con.register("_matches", table)
            con.execute("INSERT INTO feature_matches SELECT * FROM _matches")
            con.unregister("_matches")
    return m
