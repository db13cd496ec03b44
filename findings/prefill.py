"""Label a feature from the inspector in one step: a draft card prefilled from the analysis.

The researcher starts from what the analysis already says (the automatic label, its detection
score, the tokens the feature fires on and pushes up, its class) and refines it; nothing here is
a conclusion until they edit the card and mark it supported or refuted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from core.errors import LabError
from core.lab import Lab
from engine.analysis.label_trust import confidence_for as label_confidence
from engine.analysis.label_trust import label_title
from findings.evidence import FEATURE_KIND, feature_evidence, make_snapshot, resolve_refs, run_rows
from findings.model import EDITABLE, Card, FeatureRef, check_author, check_fields, check_note
from findings.store import insert_new_card


def confidence_for(f: dict[str, Any]) -> str:
    """Prefilled confidence from the label's held-out score and its 95 % interval (engine.analysis.label_trust):
    never "high" for a label whose interval does not clear chance."""
    return label_confidence(f.get("label_score"), f.get("label_score_low"), f.get("label_reliable"), f.get("label_precision"))


def _centre_tokens(detail: dict[str, Any]) -> Counter:
    counts: Counter = Counter()
    for parts in (detail.get("contexts") or {}).values():
        for c in parts.get("top") or []:
            toks = c.get("tokens") or []
            if 0 <= c.get("center", -1) < len(toks):
                counts[toks[c["center"]]] += 1
    return counts


def prefill(run: dict[str, Any], feature: int, detail: dict[str, Any] | None) -> dict[str, Any]:
    """The card fields the analysis suggests for one feature (``detail``: the inspector payload,
    None when the run has no analysis)."""
    where = f"{run['hook']}@{run['layer']}, run {run['run_id']}"
    if not detail:
        return {"title": f"feature {feature} (no analysis yet)", "label": "", "confidence": "low", "tags": [],
                "claim": f"Feature {feature} ({where}): not analysed yet, so no pattern is proposed.",
                "description": f"Run `python -m engine analyze {run['run_id']}` to see what this feature fires on."}
    f = detail.get("feature") or {}
    label, score = f.get("label") or "", f.get("label_score")
    tokens = [t for t in (f.get("label_tokens") or [])]
    if label:
        what = " / ".join(tokens) if tokens else label
        verb = "fires on the token right after" if f.get("label_kind") == "previous token" else "fires on"
        claim = f"Feature {feature} ({where}) {verb} {what}"
        low, high = f.get("label_score_low"), f.get("label_score_high")
        interval = f", 95% interval {low:.2f}-{high:.2f}" if low is not None and high is not None else ""
        claim += (f" (detection score {score:.2f}{interval} on held-out text)." if score is not None
                  else " (too few held-out firings to score the label).")
        if not f.get("label_reliable"):
            claim = (f"Unconfirmed guess: {claim[0].lower()}{claim[1:]} "
                     "The score does not clear chance (0.5) by 0.1 with 95% confidence.")
    elif f.get("dead"):
        claim = f"Feature {feature} ({where}) never fires on the analysed text."
    else:
        claim = f"Feature {feature} ({where}) has no automatic label: its pattern is still to be described."
    lines = []
    top = _centre_tokens(detail).most_common(5)
    if top:
        lines.append("Fires most on: " + ", ".join(f"{t} ({n})" for t, n in top) + " (top contexts, all domains).")
    ups = [e["token"] for e in (detail.get("token_effects") or {}).get("up") or []][:8]
    if ups:
        lines.append("Pushes up: " + ", ".join(ups) + ".")
    doms = detail.get("domains") or []
    if doms:
        lines.append("Fires on " + ", ".join(f"{d['freq']:.2%} of {d['domain']} tokens" for d in doms)
                     + (f"; max activation {f['max_act']:.3g}." if f.get("max_act") is not None else "."))
    cls = f.get("class")
    return {"title": label_title(label, f.get("label_reliable")) or f"feature {feature} (no automatic label)", "label": label,
            "claim": claim, "description": "\n".join(lines), "confidence": confidence_for(f), "tags": [cls] if cls else []}


def card_from_feature(lab: Lab, run_id: str, feature: int, author: str = "", **overrides: Any) -> Card:
    """Create a draft card about one feature, prefilled from its analysis, with a fresh snapshot.

    ``overrides`` set any card field instead of the prefilled value (title, claim, label,
    description, confidence, status, tags, notes, examples), plus ``note`` (the change note)."""
    unknown = sorted(set(overrides) - (set(EDITABLE) - {"features"}) - {"note"})
    if unknown:
        raise LabError(f"'{unknown[0]}' is not a card field you can prefill: use one of "
                       f"{', '.join(n for n in EDITABLE if n != 'features')}")
    (ref,) = resolve_refs(lab, [FeatureRef(run_id, feature)])
    run = run_rows(lab, [run_id])[run_id]
    data = feature_evidence(lab, run_id, ref.feature, run)
    note = check_note(overrides.pop("note", ""))
    values = check_fields({**prefill(run, ref.feature, data["detail"]), **overrides})
    # One snapshot for both the prefill and the card: what the card says and what it froze agree.
    snap = make_snapshot(FEATURE_KIND, data, run_id, ref.feature)
    return insert_new_card(lab, values, [replace(ref, snapshot_id=snap.snapshot_id)], [snap], check_author(author), note)
