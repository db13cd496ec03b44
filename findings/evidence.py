"""Evidence snapshots: what the researcher saw, frozen so the card outlives the run.

A feature's snapshot is the inspector's whole payload (``feature_detail``: statistics per domain,
top and quantile contexts, the automatic label and its detection score, neighbours, token
effects) plus the run's settings, taken when the feature is added to a card. Re-analysing or
deleting the run later changes nothing a card shows.

A snapshot's id is a hash of its content, so two cards that froze the same evidence share one
row, and an imported file can be checked against its ids (a corrupted or hand-edited snapshot
is refused rather than silently trusted).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Any

from core.errors import LabError
from core.lab import Lab
from db import connect
from engine.analysis.queries import analysis_info, feature_detail
from findings.model import Card, FeatureRef, check_feature_index

FEATURE_KIND = "feature"
# runs columns frozen with every feature snapshot: enough to say what the SAE was without the run.
RUN_COLUMNS = ("run_id", "name", "group_id", "status", "model", "hook", "layer", "architecture", "d_in", "d_sae", "k",
               "train_domain", "domains", "seed", "tokens_per_domain", "code_version", "created_at")


@dataclass
class PendingSnapshot:
    """A snapshot computed outside a write transaction, inserted inside it (INSERT OR IGNORE)."""

    snapshot_id: str
    kind: str
    run_id: str | None
    feature: int | None
    text: str  # canonical JSON of the data


def json_safe(value: Any) -> Any:
    """Plain JSON data: times as ISO text, numpy scalars and arrays as Python, NaN/inf as null
    (strict JSON has no NaN, and a snapshot must hash the same on every machine)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    if hasattr(value, "item"):
        return json_safe(value.item())
    raise LabError(f"evidence holds a {type(value).__name__}, which JSON cannot store: convert it to numbers, text or lists")


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed and stored (sorted keys, no spaces, UTF-8 as is)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def snapshot_id_of(kind: str, text: str) -> str:
    return hashlib.sha256(f"{kind}\n{text}".encode("utf-8")).hexdigest()[:32]


def make_snapshot(kind: str, data: Any, run_id: str | None = None, feature: int | None = None) -> PendingSnapshot:
    text = canonical_json(json_safe(data))
    return PendingSnapshot(snapshot_id_of(kind, text), kind, run_id, feature, text)


# -- reading the live lab --------------------------------------------------------------------------
def has_table(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def run_rows(lab: Lab, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The runs rows (frozen columns only) of those runs that exist."""
    if not run_ids:
        return {}
    with connect(lab, read_only=True) as con:
        cur = con.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id IN (SELECT unnest(?))", [list(run_ids)])
        cols = [d[0] for d in cur.description]
        return {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}


def resolve_refs(lab: Lab, refs: list[FeatureRef]) -> list[FeatureRef]:
    """Check that each reference names an existing run and one of its features; fill in the run's
    layer and hook (a given layer or hook that contradicts the run is refused)."""
    rows = run_rows(lab, sorted({r.run_id for r in refs}))
    out = []
    for r in refs:
        run = rows.get(r.run_id)
        if run is None:
            raise LabError(f"unknown run '{r.run_id}': list runs with python -m engine sql \"SELECT run_id, name FROM runs\"")
        r = replace(r, feature=check_feature_index(r.feature))
        if not r.feature < int(run["d_sae"]):
            raise LabError(f"feature {r.feature} does not exist: run '{r.run_id}' has features 0 to {int(run['d_sae']) - 1}")
        if r.layer is not None and r.layer != run["layer"]:
            raise LabError(f"run '{r.run_id}' is at layer {run['layer']}, not {r.layer}: drop the layer or fix it")
        if r.hook is not None and r.hook != run["hook"]:
            raise LabError(f"run '{r.run_id}' is at hook {run['hook']}, not {r.hook}: drop the hook or fix it")
        out.append(FeatureRef(r.run_id, int(r.feature), int(run["layer"]), str(run["hook"]), r.snapshot_id))
    return out


def feature_evidence(lab: Lab, run_id: str, feature: int, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a card freezes about one feature: the run's settings and the inspector's payload.

    A run without a feature analysis still gets a snapshot (its settings, and a note saying the
    analysis was missing), so a card can be written before the analysis has run."""
    run = run if run is not None else run_rows(lab, [run_id]).get(run_id)
    if run is None:
        raise LabError(f"unknown run '{run_id}': list runs with python -m engine sql \"SELECT run_id, name FROM runs\"")
    data: dict[str, Any] = {"format": 1, "run": run, "feature": int(feature), "detail": None, "note": ""}
    if analysis_info(lab, run_id) is None:
        data["note"] = (f"run {run_id} had no feature analysis when this was saved: only the run's settings were frozen "
                        f"(python -m engine analyze {run_id}, then refresh the card's evidence)")
    else:
        data["detail"] = feature_detail(lab, run_id, int(feature))
    return json_safe(data)


def feature_snapshots(lab: Lab, refs: list[FeatureRef]) -> tuple[list[FeatureRef], list[PendingSnapshot]]:
    """Fresh snapshots for ``refs`` (already resolved): the refs carrying their snapshot ids."""
    rows = run_rows(lab, sorted({r.run_id for r in refs}))
    out, snaps = [], []
    for r in refs:
        snap = make_snapshot(FEATURE_KIND, feature_evidence(lab, r.run_id, r.feature, rows.get(r.run_id)), r.run_id, r.feature)
        snaps.append(snap)
        out.append(FeatureRef(r.run_id, r.feature, r.layer, r.hook, snap.snapshot_id))
    return out, snaps


# -- reading snapshots back ------------------------------------------------------------------------
def load_snapshots(lab: Lab, snapshot_ids: list[str]) -> dict[str, dict[str, Any]]:
    """{snapshot_id: {"snapshot_id", "kind", "run_id", "feature", "created_at", "data"}} for the ids held."""
    ids = list(dict.fromkeys(snapshot_ids))
    if not ids:
        return {}
    with connect(lab, read_only=True) as con:
        if not has_table(con, "evidence_snapshots"):
            return {}
        rows = con.execute("SELECT snapshot_id, kind, run_id, feature, created_at, data FROM evidence_snapshots "
                           "WHERE snapshot_id IN (SELECT unnest(?))", [ids]).fetchall()
    return {r[0]: {"snapshot_id": r[0], "kind": r[1], "run_id": r[2], "feature": r[3],
                   "created_at": r[4].isoformat(timespec="microseconds"), "data": json.loads(r[5])} for r in rows}


def load_snapshot(lab: Lab, snapshot_id: str) -> dict[str, Any]:
    snap = load_snapshots(lab, [snapshot_id]).get(snapshot_id)
    if snap is None:
        raise LabError(f"no evidence snapshot '{snapshot_id}' in this lab")
    return snap


def card_evidence(lab: Lab, card: Card) -> dict[str, dict[str, Any]]:
    """Every snapshot the card (at its revision) refers to."""
    return load_snapshots(lab, card.snapshot_ids)


def live_status(lab: Lab, card: Card) -> list[dict[str, Any]]:
    """For each feature of the card, what the live lab still holds, so a page can link back to the
    live feature or say why it cannot: ``state`` is ``live`` (same analysis as the snapshot),
    ``reanalysed`` (the run was analysed again since), ``no-analysis`` or ``run-deleted``."""
    snaps = card_evidence(lab, card)
    runs = run_rows(lab, sorted({f.run_id for f in card.features}))
    out = []
    for f in card.features:
        frozen = ((snaps.get(f.snapshot_id or "") or {}).get("data") or {}).get("detail") or {}
        info = analysis_info(lab, f.run_id) if f.run_id in runs else None
        if f.run_id not in runs:
            state = "run-deleted"
        elif info is None:
            state = "no-analysis"
        else:
            live_at = json_safe(info.get("created_at"))
            state = "live" if frozen and (frozen.get("analysis") or {}).get("created_at") == live_at else "reanalysed"
        out.append({"run_id": f.run_id, "feature": f.feature, "layer": f.layer, "hook": f.hook, "snapshot_id": f.snapshot_id,
                    "state": state, "run_exists": f.run_id in runs, "analysis_exists": info is not None})
    return out
