"""Sweep results: a leaderboard by the sweep's metric, a composite "best overall", a Pareto front.

Rows are *configurations* (a group: same settings, one SAE per training domain), the unit the seeds
compare ("k=16, layer=2"). Per configuration:
  fvu, r2, mse, cosine, l0, dead_frac   mean over its SAEs of the in-domain held-out values
  transfer_ratio                         mean over its SAEs and the other domains of MSE(A→B)/MSE(A→A)
  score                                  mean 0–5 quality score
  concept_coverage, probe_k1             mean ground-truth concept coverage and 1-latent probe accuracy
                                         (and probe_k1_baseline, the model's own dims), once analysed
The composite, in the seed's sense of reconstruction, transfer and sparsity together, on [0, 1]:
  overall = ( R²_in + 1 / transfer_ratio + (1 − L0 / d_in) ) / 3
(each term is 1 at its ideal: perfect in-domain reconstruction, no loss on the other domain, no
active latents). The Pareto front holds, per layer, the configurations no other beats on both
FVU and L0. SAEs imported from elsewhere are not configurations of this lab's (no training domain,
settings it did not choose): they are compared in the run tables, not ranked here.
"""

from __future__ import annotations

import pandas as pd

from core.lab import Lab
from db import query

CONFIG_SQL = """
WITH spl AS (
    SELECT run_id, avg(ce_recovered) AS ce_recovered, avg(emb_cos_sae) AS emb_cos_sae FROM splice_results GROUP BY run_id
)
SELECT r.group_id, any_value(r.layer) AS layer, any_value(r.hook) AS hook, any_value(r.architecture) AS architecture,
       any_value(r.k) AS k, any_value(r.d_sae) AS d_sae, any_value(r.d_in) AS d_in,
       count(*) AS n_saes, string_agg(r.train_domain, '+' ORDER BY r.train_domain) AS train_domains,
       avg(m.fvu) AS fvu, avg(m.r2) AS r2, avg(m.mse) AS mse, avg(m.cosine) AS cosine,
       avg(m.l0) AS l0, avg(m.dead_frac) AS dead_frac, avg(m.transfer_ratio) AS transfer_ratio,
       avg(q.score) AS score, avg(spl.ce_recovered) AS ce_recovered, avg(spl.emb_cos_sae) AS emb_cos_sae,
       avg(m.concept_coverage) AS concept_coverage, avg(m.probe_k1) AS probe_k1, avg(m.probe_k1_baseline) AS probe_k1_baseline,
       list(r.run_id ORDER BY r.train_domain) AS run_ids
FROM runs r JOIN run_metrics m USING (run_id) LEFT JOIN spl USING (run_id)
     LEFT JOIN quality_scores q USING (run_id)
WHERE r.status = 'FINISHED' AND r.run_id NOT IN (SELECT run_id FROM run_imports) {where}
GROUP BY r.group_id
"""


def configurations(lab: Lab, sweep_id: str | None = None) -> pd.DataFrame:
    where, params = ("AND r.sweep_id = ?", [sweep_id]) if sweep_id else ("", [])
    df = query(lab, CONFIG_SQL.format(where=where), params)
    if df.empty:
        return df
    df["overall"] = (df["r2"] + 1 / df["transfer_ratio"].fillna(1.0) + (1 - df["l0"] / df["d_in"].clip(lower=1))) / 3
    return df


def leaderboard(lab: Lab, sweep_id: str | None, metric: str = "overall", goal: str = "maximize") -> pd.DataFrame:
    df = configurations(lab, sweep_id)
    if df.empty or metric not in df.columns:
        return df
    df = df.sort_values(metric, ascending=(goal == "minimize"), na_position="last").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def pareto_front(df: pd.DataFrame, x: str = "l0", y: str = "fvu", by: str = "layer") -> pd.DataFrame:
    """Per ``by`` group, rows no other row beats on both x and y (lower is better on both)."""
    if df.empty:
        return df
    keep = []
    for _, g in df.groupby(by):
        pts = g[[x, y]].to_numpy()
        for i, (xi, yi) in enumerate(pts):
            dominated = any((xj <= xi and yj <= yi) and (xj < xi or yj < yi) for j, (xj, yj) in enumerate(pts) if j != i)
            if not dominated:
                keep.append(g.index[i])
    return df.loc[keep].sort_values([by, x])
