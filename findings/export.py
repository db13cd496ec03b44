"""Cards out of the lab and back in: Markdown to read, JSON to move, the seed's feature registry.

JSON (``export_json`` / ``import_json``) carries everything: every revision of every card and
every evidence snapshot they refer to, so importing it into another lab reproduces the cards
field for field, history included, even where the runs do not exist. Import keeps card ids (links
and history stay meaningful) and is idempotent: a card already present with the same revisions
is left alone, a card whose history the file extends gets the newer revisions, and a card whose
history differs from the file's is refused (nothing is imported) rather than overwritten.
Snapshots are checked against their content hash, so a damaged or hand-edited one is refused.

The feature registry (seed 004) is ``{feature_id: {"name", "description", "examples",
"confidence"}}``. ``export_registry(run_id=R)`` keys it by the bare feature index, exactly the
seed's shape for one SAE; without ``run_id`` the keys are ``"<run_id>:<feature>"`` so features of
several runs cannot collide. ``import_registry`` reads both forms.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import LabError
from core.lab import Lab
from db import transaction, utcnow
from findings.evidence import (
    FEATURE_KIND,
    PendingSnapshot,
    canonical_json,
    feature_evidence,
    json_safe,
    load_snapshots,
    make_snapshot,
    resolve_refs,
    run_rows,
    snapshot_id_of,
)
from findings.model import (
    CONFIDENCES,
    Card,
    FeatureRef,
    Revision,
    check_author,
    check_card,
    check_choice,
    check_examples,
    check_fields,
    check_kind,
    check_note,
    check_snapshot_id,
    parse_timestamp,
    timestamp,
)
from findings.prefill import prefill
from findings.render import card_markdown, join_tokens
from findings.search import search_cards
from findings.store import (
    REVISION_COLUMNS,
    card_history,
    get_card,
    insert_new_cards,
    insert_snapshots,
    revision_from_row,
    write_revision,
)

FORMAT = "sae-lab-findings"
FORMAT_VERSION = 1
REGISTRY_KEYS = ("name", "description", "examples", "confidence")
REGISTRY_EXAMPLES = 5


def _cards(lab: Lab, card_ids: list[str] | None, include_deleted: bool) -> list[Card]:
    """The named cards (deleted ones too: naming a card is asking for it), or every card."""
    if card_ids is None:
        return list(reversed(search_cards(lab, include_deleted=include_deleted)))  # oldest first
    return [get_card(lab, cid) for cid in dict.fromkeys(card_ids)]


# -- JSON ------------------------------------------------------------------------------------------
def export_json(lab: Lab, card_ids: list[str] | None = None, include_deleted: bool = False) -> dict[str, Any]:
    """Cards with every revision and every snapshot they refer to, as one JSON-ready dict."""
    cards, wanted = [], []
    for card in _cards(lab, card_ids, include_deleted):
        history = card_history(lab, card.card_id)
        cards.append({"card_id": card.card_id, "revisions": [r.to_dict() for r in history]})
        wanted += [sid for r in history for sid in r.card.snapshot_ids]
    snaps = load_snapshots(lab, wanted)
    missing = [sid for sid in dict.fromkeys(wanted) if sid not in snaps]
    if missing:
        raise LabError(f"evidence snapshot {missing[0]} is missing from this lab: the database was edited by hand; export the "
                       "other cards")
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "exported_at": timestamp(utcnow()), "cards": cards,
            "snapshots": {sid: {k: v for k, v in snaps[sid].items() if k != "snapshot_id"} for sid in dict.fromkeys(wanted)}}


def _normalise_card(card: Card) -> Card:
    """Times in the one text form the lab writes (an edited file may spell them differently)."""
    def ts(v: str | None) -> str | None:
        return timestamp(parse_timestamp(v)) if v else v
    return replace(card, created_at=ts(card.created_at), updated_at=ts(card.updated_at), deleted_at=ts(card.deleted_at),
                   evidence=[replace(e, attached_at=ts(e.attached_at)) for e in card.evidence])


def _parse_file(data: Any) -> tuple[list[tuple[str, list[Revision]]], dict[str, PendingSnapshot], dict[str, str]]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LabError(f"not a findings export (no \"format\": \"{FORMAT}\"): export cards with `python -m engine findings "
                       "export --format json`"
                       " (for a seed-004 feature registry use --registry)")
    if data.get("format_version") != FORMAT_VERSION:
        raise LabError(f"findings export format version {data.get('format_version')!r} is not {FORMAT_VERSION}: export it again "
                       "with this lab")
    if not isinstance(data.get("cards"), list) or not isinstance(data.get("snapshots"), dict):
        raise LabError("findings export is missing its 'cards' list or 'snapshots' object: the file is damaged")
    snaps, created = {}, {}
    for sid, s in data["snapshots"].items():
        check_snapshot_id(sid)
        if not isinstance(s, dict) or not {"kind", "data", "created_at"} <= set(s):
            raise LabError(f"snapshot {sid} in the file lacks kind, data or created_at: the file is damaged")
        kind = FEATURE_KIND if s["kind"] == FEATURE_KIND else check_kind(s["kind"])
        run_id = s.get("run_id") if isinstance(s.get("run_id"), str) else None
        feature = s.get("feature") if isinstance(s.get("feature"), int) and not isinstance(s.get("feature"), bool) else None
        snap = PendingSnapshot(sid, kind, run_id, feature, canonical_json(json_safe(s["data"])))
        if snapshot_id_of(kind, snap.text) != sid:
            raise LabError(f"snapshot {sid} does not match its content: the file was edited or damaged, export it again")
        try:
            created[sid] = timestamp(parse_timestamp(s["created_at"]))
        except (TypeError, ValueError):
            raise LabError(f"snapshot {sid}: created_at {s['created_at']!r} is not an ISO time") from None
        snaps[sid] = snap
    cards = []
    for i, c in enumerate(data["cards"]):
        if not isinstance(c, dict) or not isinstance(c.get("revisions"), list) or not c["revisions"]:
            raise LabError(f"card {i + 1} in the file has no revisions: the file is damaged")
        revs = []
        for n, r in enumerate(c["revisions"], 1):
            rev = Revision.from_dict(r, f"cards[{i}].revisions[{n - 1}]")
            card = check_card(_normalise_card(rev.card))
            if rev.card_id != c.get("card_id") or card.card_id != rev.card_id or rev.revision != n or card.revision != n:
                raise LabError(f"card {c.get('card_id')!r} in the file: revision {n} is misnumbered or belongs to another card")
            check_author(rev.author), check_note(rev.note)
            for sid in card.snapshot_ids:
                if sid not in snaps:
                    raise LabError(f"card {card.card_id} revision {n} refers to snapshot {sid}, which the file lacks: export it "
                                   "again")
            revs.append(replace(rev, card=card, edited_at=timestamp(parse_timestamp(rev.edited_at))))
        cards.append((c["card_id"], revs))
    if len({cid for cid, _ in cards}) != len(cards):
        raise LabError("the file holds the same card twice: export it again")
    used = {sid for _, revs in cards for r in revs for sid in r.card.snapshot_ids}  # no card refers to the rest: not imported
    return cards, {sid: s for sid, s in snaps.items() if sid in used}, created


def import_json(lab: Lab, data: dict[str, Any]) -> dict[str, Any]:
    """Import an ``export_json`` dict in one transaction; returns the card ids created, updated
    (history extended) and unchanged, and how many snapshots were new."""
    cards, snaps, created_at = _parse_file(data)
    summary: dict[str, Any] = {"created": [], "updated": [], "unchanged": [], "snapshots_added": 0}
    with transaction(lab) as con:
        have = {r[0] for r in con.execute("SELECT snapshot_id FROM evidence_snapshots WHERE snapshot_id IN (SELECT unnest(?))",
                                          [list(snaps)]).fetchall()}
        for sid, snap in snaps.items():
            if sid not in have:
                insert_snapshots(con, [snap], parse_timestamp(created_at[sid]))
                summary["snapshots_added"] += 1
        for card_id, revs in cards:
            rows = con.execute(f"SELECT {REVISION_COLUMNS} FROM finding_revisions WHERE card_id = ? ORDER BY revision",
                               [card_id]).fetchall()
            mine = [revision_from_row(card_id, r).to_dict() for r in rows]
            incoming = [r.to_dict() for r in revs]
            if len(mine) > len(incoming) or mine != incoming[: len(mine)]:
                raise LabError(f"card {card_id} in this lab differs from the file's (here {len(mine)} revisions, there "
                               f"{len(incoming)}): "
                               "nothing was imported; export this lab's card, or purge it, before importing")
            if len(mine) == len(incoming):
                summary["unchanged"].append(card_id)
                continue
            summary["updated" if mine else "created"].append(card_id)
            first_rev: dict[int, int] = {}
            for rev in revs[len(mine):]:
                write_revision(con, rev.card, rev.action, rev.author, rev.note, rev.changed, rev.edited_at)
            for rev in revs:
                for e in rev.card.evidence:
                    first_rev.setdefault(e.evidence_no, rev.revision)
            for e in revs[-1].card.evidence:
                con.execute("INSERT OR IGNORE INTO finding_evidence VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [card_id, e.evidence_no, e.kind, e.snapshot_id, e.note, parse_timestamp(e.attached_at), e.attached_by,
                             first_rev[e.evidence_no]])
    return summary


# -- Markdown --------------------------------------------------------------------------------------
def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].strip("-")


def export_markdown(lab: Lab, card_ids: list[str] | None, folder: str | Path, include_deleted: bool = False) -> list[Path]:
    """One readable Markdown file per card (``<card_id>-<title-slug>.md``) with its evidence and
    history; returns the files written. A file is written whole or not at all (temp + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for card in _cards(lab, card_ids, include_deleted):
        text = card_markdown(card, load_snapshots(lab, card.snapshot_ids), card_history(lab, card.card_id))
        slug = _slug(card.title)
        path = folder / (f"{card.card_id}-{slug}.md" if slug else f"{card.card_id}.md")
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths


# -- the seed's feature registry -------------------------------------------------------------------
def _registry_examples(card: Card, ref: FeatureRef, snaps: dict[str, dict[str, Any]]) -> list[str]:
    if card.examples:
        return list(card.examples)
    detail = ((snaps.get(ref.snapshot_id or "") or {}).get("data") or {}).get("detail") or {}
    tops = sorted((c for parts in (detail.get("contexts") or {}).values() for c in parts.get("top") or []),
                  key=lambda c: -c["activation"])
    return [join_tokens(c["tokens"], c["center"], mark=lambda t: f"⟦{t}⟧") for c in tops[:REGISTRY_EXAMPLES]]


def _registry_entry(card: Card, ref: FeatureRef, snaps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"name": card.label or card.title, "description": card.description, "examples": _registry_examples(card, ref, snaps),
            "confidence": card.confidence}


def export_registry(lab: Lab, card_ids: list[str] | None = None, run_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The cards as a seed-004 feature registry, one entry per (card, feature): name = label (or
    title), description, examples (the card's, else the top contexts frozen in its
    evidence, max-activating token between ⟦ ⟧), confidence. When several cards describe one
    feature, the most recently updated wins. Keys: feature index with ``run_id``, else "run:feature"."""
    cards = sorted(_cards(lab, card_ids, False), key=lambda c: c.updated_at, reverse=True)
    snaps = load_snapshots(lab, [sid for c in cards for sid in c.snapshot_ids])
    entries: dict[tuple[str, int], dict[str, Any]] = {}
    for card in cards:
        for ref in card.features:
            if run_id is not None and ref.run_id != run_id:
                continue
            entries.setdefault(ref.key, _registry_entry(card, ref, snaps))
    return {(str(f) if run_id is not None else f"{r}:{f}"): entries[(r, f)] for r, f in sorted(entries)}


def _registry_key(key: Any, run_id: str | None) -> tuple[str, int]:
    text = str(key).strip()
    if text.isdigit():
        if run_id is None:
            raise LabError(f"registry key '{text}' is a bare feature index: name the run it belongs to (--run RUN)")
        return run_id, int(text)
    run, sep, feat = text.rpartition(":")
    if not sep or not run or not feat.isdigit():
        raise LabError(f"registry key '{text}' is neither a feature index nor RUN:FEATURE")
    if run_id is not None and run != run_id:
        raise LabError(f"registry key '{text}' is for run {run}, not {run_id}: drop --run or fix the key")
    return run, int(feat)


def import_registry(lab: Lab, data: Any, run_id: str | None = None, author: str = "") -> dict[str, Any]:
    """Create one draft card per registry entry, with a fresh evidence snapshot of the feature.

    Every entry is checked before anything is written (all cards are created in one transaction, or
    none). An entry equal to what a live card of that feature exports (``export_registry``) is
    skipped, so importing a registry twice, or into the lab it came from, creates nothing twice."""
    author = check_author(author)
    if not isinstance(data, dict) or not data:
        raise LabError("a feature registry is a JSON object {feature_id: {name, description, examples, confidence}}, and this "
                       "one is empty or not an object")
    planned = []
    for key, entry in data.items():
        where = f"registry entry '{key}'"
        if not isinstance(entry, dict):
            raise LabError(f"{where} must be an object with name, description, examples and confidence")
        unknown = sorted(set(entry) - set(REGISTRY_KEYS))
        if unknown:
            raise LabError(f"{where} has an unknown key '{unknown[0]}': a registry entry has {', '.join(REGISTRY_KEYS)}")
        if not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise LabError(f"{where} has no name: give it one, e.g. \"mathematical_equations\"")
        examples = entry.get("examples") or []
        if isinstance(examples, list) and any(not isinstance(e, str) for e in examples):
            raise LabError(f"{where}: examples must be texts (the seed's [...] placeholder is not JSON)")
        values = {"title": entry["name"], "label": entry["name"], "description": entry.get("description") or "",
                  "confidence": check_choice(f"{where}: confidence", entry.get("confidence", "low"), CONFIDENCES),
                  "examples": check_examples(examples)}
        planned.append((_registry_key(key, run_id), check_fields(values)))
    refs = resolve_refs(lab, [FeatureRef(r, f) for (r, f), _ in planned])
    runs = run_rows(lab, sorted({r.run_id for r in refs}))
    # What the feature's live cards export as: an entry equal to one of those is already on a card.
    existing: dict[tuple[str, int], set[str]] = {}
    held = [c for rid in runs for c in search_cards(lab, run_id=rid)]
    snaps = load_snapshots(lab, [sid for c in held for sid in c.snapshot_ids])
    for c in held:
        for f in c.features:
            existing.setdefault(f.key, set()).add(canonical_json(_registry_entry(c, f, snaps)))
    items, skipped = [], []
    for ((rid, feat), values), ref in zip(planned, refs):
        entry = canonical_json({"name": values["label"], "description": values["description"], "examples": values["examples"],
                                "confidence": values["confidence"]})
        if entry in existing.get((rid, feat), set()):
            skipped.append(f"{rid}:{feat}")
            continue
        existing.setdefault((rid, feat), set()).add(entry)
        data_ = feature_evidence(lab, rid, feat, runs[rid])
        hint = prefill(runs[rid], feat, data_["detail"])
        snap = make_snapshot(FEATURE_KIND, data_, rid, feat)
        values = check_fields({**values, "claim": hint["claim"], "tags": hint["tags"]})
        items.append((values, [replace(ref, snapshot_id=snap.snapshot_id)], [snap]))
    cards = insert_new_cards(lab, items, author, "imported from a feature registry") if items else []
    return {"created": [c.card_id for c in cards], "skipped": skipped}
