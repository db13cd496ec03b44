"""Reads of stored interventions, as the inspector, the CLI and the findings make them.

Each function opens one short read-only connection and returns plain Python data or a DataFrame.
A lab whose database predates the interventions tables reads as holding none.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from core.errors import LabError
from core.lab import Lab
from db import connect
from engine.interventions.results import evidence_record

_LIST_COLUMNS = """intervention_id, run_id, features, edits, model_kind, input_kind, input_text, domain, sequences,
                   n_tokens, n_edited_positions, kl_mean, kl_max, cosine_shift, delta_ce, neighbour_overlap,
                   neighbour_spearman, notes, seconds, created_at"""


def _has_table(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def _records(cur) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("edits", "spec", "feature_acts", "delta_ce"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def interventions_for_feature(lab: Lab, run_id: str, feature: int, limit: int = 100) -> pd.DataFrame:
    """Stored interventions of a run that edited ``feature``, newest first (one row each; the
    JSON columns edits and delta_ce as text)."""
    with connect(lab, read_only=True) as con:
        if not _has_table(con, "interventions"):
            return pd.DataFrame()
        return con.execute(
            f"SELECT {_LIST_COLUMNS} FROM interventions WHERE run_id = ? AND list_contains(features, ?) "
            "ORDER BY created_at DESC, intervention_id DESC LIMIT ?", [run_id, int(feature), int(limit)]).df()


def list_interventions(lab: Lab, run_id: str | None = None, limit: int = 100) -> pd.DataFrame:
    """Stored interventions (of one run, or all), newest first."""
    with connect(lab, read_only=True) as con:
        if not _has_table(con, "interventions"):
            return pd.DataFrame()
        where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
        return con.execute(f"SELECT {_LIST_COLUMNS} FROM interventions {where} ORDER BY created_at DESC, intervention_id DESC "
                           "LIMIT ?",
                           params + [int(limit)]).df()


def intervention_detail(lab: Lab, intervention_id: str) -> dict[str, Any]:
    """Everything stored about one intervention: the interventions row (JSON decoded) plus
    ``token_movers`` ({"up": [...], "down": [...]}), ``generation`` (dict or None) and
    ``neighbours`` ({kind: [...]})."""
    with connect(lab, read_only=True) as con:
        rows = _records(con.execute("SELECT * FROM interventions WHERE intervention_id = ?", [intervention_id])) \
            if _has_table(con, "interventions") else []
        if not rows:
            raise LabError(f"unknown intervention '{intervention_id}': list them with python -m engine sql \"select "
                           "intervention_id from interventions\"")
        out = _decode(rows[0])
        movers = _records(con.execute("SELECT direction, rank, token_id, token, delta FROM intervention_token_movers "
                                      "WHERE intervention_id = ? ORDER BY direction DESC, rank", [intervention_id]))
        gens = _records(con.execute("SELECT * EXCLUDE (intervention_id) FROM intervention_generations WHERE intervention_id = ?",
                                    [intervention_id]))
        nbs = _records(con.execute("SELECT * EXCLUDE (intervention_id) FROM intervention_neighbours WHERE intervention_id = ? "
                                   "ORDER BY kind, rank", [intervention_id]))
    out["token_movers"] = {"up": [], "down": []}
    for m in movers:
        out["token_movers"][m.pop("direction")].append(m)
    out["generation"] = gens[0] if gens else None
    out["neighbours"] = {}
    for n in nbs:
        out["neighbours"].setdefault(n.pop("kind"), []).append(n)
    return out


def intervention_evidence(lab: Lab, intervention_id: str) -> dict[str, Any]:
    """The stored intervention as the plain dict a findings card attaches (the same keys as
    ``InterventionResult.evidence()``)."""
    d = intervention_detail(lab, intervention_id)
    g = d["generation"]
    created = d["created_at"]
    return evidence_record(
        intervention_id=intervention_id, run_id=d["run_id"], spec=d["spec"], model_kind=d["model_kind"],
        input_kind=d["input_kind"],
        n_edited_positions=d["n_edited_positions"], kl_mean=d["kl_mean"], kl_max=d["kl_max"], cosine_shift=d["cosine_shift"],
        delta_ce=d["delta_ce"], neighbour_overlap=d["neighbour_overlap"], neighbour_spearman=d["neighbour_spearman"],
        feature_acts=d["feature_acts"], token_source=d["token_source"] or "", token_movers=d["token_movers"],
        created_at=created.isoformat(timespec="seconds") if hasattr(created, "isoformat") else str(created),
        generation=None if not g else {"clean": g["clean_text"], "edited": g["edited_text"],
                                       "sampled": g["sampled"], "seed": g["seed"]})


def specificity_studies(lab: Lab, run_id: str | None = None) -> pd.DataFrame:
    with connect(lab, read_only=True) as con:
        if not _has_table(con, "specificity_studies"):
            return pd.DataFrame()
        where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
        return con.execute(f"SELECT * FROM specificity_studies {where} ORDER BY created_at DESC", params).df()


def specificity_detail(lab: Lab, study_id: str) -> dict[str, Any]:
    with connect(lab, read_only=True) as con:
        rows = _records(con.execute("SELECT * FROM specificity_studies WHERE study_id = ?", [study_id])) \
            if _has_table(con, "specificity_studies") else []
        if not rows:
            raise LabError(f"unknown specificity study '{study_id}': list them with python -m engine sql \"select * from "
                           "specificity_studies\"")
        feats = _records(con.execute("SELECT * EXCLUDE (study_id) FROM specificity_features WHERE study_id = ? ORDER BY feature",
                                     [study_id]))
    return {**rows[0], "features": feats}
