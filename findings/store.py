"""Saving and reading cards: every save is a revision, and no save overwrites another unseen.

Writes go through ``db.transaction`` (one write transaction each) with bound parameters only.
Evidence is read from the live lab *before* the transaction (the inspector's query needs its own
read-only connection) and inserted inside it.

Concurrency is optimistic: an edit names the revision it started from (``expected_version``);
inside the transaction the stored revision is compared with it and the save is refused with
``CardChangedError`` when another save came first. DuckDB lets one connection write the file at
a time (and ``db.connect`` serialises this process), so the compare and the write are one atomic
step: of two tabs saving revision 3, exactly one becomes revision 4.
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

from core.errors import LabError
from core.lab import Lab
from db import connect, transaction, utcnow
from findings.evidence import (
    PendingSnapshot,
    canonical_json,
    feature_snapshots,
    has_table,
    make_snapshot,
    resolve_refs,
    run_rows,
)
from findings.model import (
    EDITABLE,
    EVIDENCE_BYTES_MAX,
    Card,
    CardChangedError,
    CardNotFoundError,
    Evidence,
    Revision,
    check_author,
    check_card_id,
    check_fields,
    check_kind,
    check_note,
    integral,
    new_card_id,
    parse_timestamp,
    timestamp,
)

FINDINGS_COLUMNS = ("card_id", "revision", "title", "claim", "label", "description", "confidence", "status", "tags", "notes",
                    "examples", "author", "created_at", "updated_at", "updated_by", "deleted_at")
LIST_HINT = "list cards with `python -m engine findings list`"


@contextmanager
def reader(lab: Lab) -> Iterator[Any]:
    """A read-only connection, or None when the lab has no database or no findings tables yet
    (a lab last written by older code: the app opens labs read-only and never migrates them)."""
    if not lab.db.exists():
        yield None
        return
    with connect(lab, read_only=True) as con:
        yield con if has_table(con, "findings") else None


# -- writing ---------------------------------------------------------------------------------------
def insert_snapshots(con, snaps: list[PendingSnapshot], created_at: dt.datetime) -> None:
    for s in snaps:
        con.execute("INSERT OR IGNORE INTO evidence_snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [s.snapshot_id, s.kind, s.run_id, s.feature, len(s.text.encode("utf-8")), s.text, created_at])


def write_revision(con, card: Card, action: str, author: str, note: str, changed: list[str], edited_at: str) -> None:
    """Record ``card`` as its revision and make it the card's current state."""
    con.execute("INSERT INTO finding_revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [card.card_id, card.revision, action, author, note, parse_timestamp(edited_at), changed,
                 canonical_json(card.to_dict())])
    for i, f in enumerate(card.features):
        con.execute("INSERT INTO finding_features VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [card.card_id, card.revision, i, f.run_id, f.layer, f.hook, f.feature, f.snapshot_id])
    values = [getattr(card, c) for c in FINDINGS_COLUMNS]
    for i, c in enumerate(FINDINGS_COLUMNS):
        if c.endswith("_at"):
            values[i] = parse_timestamp(values[i])
    con.execute(f"INSERT OR REPLACE INTO findings ({', '.join(FINDINGS_COLUMNS)}) VALUES ({', '.join('?' * len(values))})",
                values)


def _require_db(lab: Lab, card_id: str) -> None:
    """An edit of a card in a folder without a lab must not create an empty lab there."""
    if not lab.db.exists():
        raise CardNotFoundError(f"no card '{card_id}' in {lab.root}: there is no lab database there (check --lab)")


def _stored_card(con, card_id: str) -> Card:
    """The current card, read inside a write transaction."""
    rows = con.execute("SELECT r.card FROM findings f JOIN finding_revisions r ON r.card_id = f.card_id AND r.revision = "
                       "f.revision "
                       "WHERE f.card_id = ?", [card_id]).fetchall()
    if not rows:
        raise CardNotFoundError(f"no card '{card_id}' in this lab: {LIST_HINT}")
    return Card.from_dict(json.loads(rows[0][0]), "card")


def check_version(card: Card, expected_version: int | None) -> None:
    """Refuse a save that did not start from the stored revision (None: no check)."""
    if expected_version is None:
        return
    expected_version = integral(expected_version)
    if isinstance(expected_version, bool) or not isinstance(expected_version, int):
        raise LabError(f"expected version '{expected_version}' must be a revision number "
                       "(the card's revision when you opened it)")
    if card.revision != expected_version:
        when = card.updated_at.replace("T", " ")[:19] + " UTC"
        raise CardChangedError(
            f"card {card.card_id} changed since you opened it (now revision {card.revision} by "
            f"{card.updated_by or 'an unnamed author'} "
            f"at {when}; you opened revision {expected_version}): reload it and reapply your edit")


def _changed(old: Card, new: Card) -> list[str]:
    names = list(EDITABLE) + ["deleted_at", "evidence"]
    return [n for n in names if getattr(old, n) != getattr(new, n)]


def _save(lab: Lab, card_id: str, expected_version: int | None, action: str, author: str, note: str,
          build, snaps: list[PendingSnapshot] = (), allow_deleted: bool = False) -> Card:
    """The compare-and-set step every edit shares: read the stored card inside the transaction,
    check its revision, build the next revision from it, write it."""
    now = utcnow()
    _require_db(lab, card_id)
    with transaction(lab) as con:
        current = _stored_card(con, card_id)
        check_version(current, expected_version)
        if current.deleted and not allow_deleted:
            raise LabError(f"card {card_id} is deleted: restore it first (python -m engine findings restore {card_id})")
        new = build(con, current)
        changed = _changed(current, new)
        if not changed:
            return current
        new = replace(new, revision=current.revision + 1, updated_at=timestamp(now), updated_by=author)
        insert_snapshots(con, list(snaps), now)
        write_revision(con, new, action, author, note, changed, new.updated_at)
    return new


# -- the API ---------------------------------------------------------------------------------------
def create_card(lab: Lab, title: str, features: Any, *, claim: str = "", label: str = "", description: str = "",
                confidence: str = "low", status: str = "draft", tags: Any = (), notes: str = "", examples: Any = (),
                author: str = "", note: str = "") -> Card:
    """Save a new card (revision 1) with a fresh evidence snapshot of each feature.

    ``features``: FeatureRefs, ``(run_id, feature)`` pairs, ``"run:feature"`` texts or dicts; each
    run must exist and the index be one of its features. A run without a feature analysis is
    accepted: its snapshot holds the run's settings and a note saying the analysis was missing."""
    values = check_fields({"title": title, "claim": claim, "label": label, "description": description, "confidence": confidence,
                           "status": status, "tags": list(tags), "notes": notes, "examples": list(examples),
                           "features": features})
    author, note = check_author(author), check_note(note)
    refs = [replace(r, snapshot_id=None) for r in values.pop("features")]  # snapshots are always taken here, never trusted
    refs, snaps = feature_snapshots(lab, resolve_refs(lab, refs))
    return insert_new_card(lab, values, refs, snaps, author, note)


def insert_new_card(lab: Lab, values: dict[str, Any], refs: list, snaps: list[PendingSnapshot], author: str, note: str) -> Card:
    """Write revision 1 of a card whose fields are validated and whose refs carry their snapshots."""
    return insert_new_cards(lab, [(values, refs, snaps)], author, note)[0]


def insert_new_cards(lab: Lab, items: list[tuple[dict[str, Any], list, list[PendingSnapshot]]], author: str,
                     note: str) -> list[Card]:
    """Write several new cards in one transaction (all or none): (fields, refs, snapshots) each."""
    now = utcnow()
    cards = [Card(card_id=new_card_id(), revision=1, author=author, created_at=timestamp(now), updated_at=timestamp(now),
                  updated_by=author, features=refs, **values) for values, refs, _ in items]
    with transaction(lab) as con:
        for card, (_, _, snaps) in zip(cards, items):
            insert_snapshots(con, snaps, now)
            write_revision(con, card, "create", author, note, [], card.updated_at)
    return cards


def get_card(lab: Lab, card_id: str, revision: int | None = None) -> Card:
    """The card as it is now, or as it was at ``revision``."""
    check_card_id(card_id)
    revision = integral(revision) if revision is not None else None
    if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int)):
        raise LabError(f"revision '{revision}' must be a whole number")
    with reader(lab) as con:
        rows = [] if con is None else con.execute(
            "SELECT f.revision, r.card FROM findings f LEFT JOIN finding_revisions r "
            "ON r.card_id = f.card_id AND r.revision = coalesce(?, f.revision) WHERE f.card_id = ?",
            [revision, card_id]).fetchall()
    if not rows:
        raise CardNotFoundError(f"no card '{card_id}' in this lab: {LIST_HINT}")
    latest, text = rows[0]
    if text is None:
        raise LabError(f"card {card_id} has revisions 1 to {latest}, not {revision}: pick one of those")
    return Card.from_dict(json.loads(text), "card")


def card_history(lab: Lab, card_id: str) -> list[Revision]:
    """Every revision of the card, oldest first, each with the whole card as it was then."""
    check_card_id(card_id)
    with reader(lab) as con:
        rows = [] if con is None else con.execute(
            f"SELECT {REVISION_COLUMNS} FROM finding_revisions WHERE card_id = ? ORDER BY revision",
            [card_id]).fetchall()
    if not rows:
        raise CardNotFoundError(f"no card '{card_id}' in this lab: {LIST_HINT}")
    return [revision_from_row(card_id, r) for r in rows]


REVISION_COLUMNS = "revision, action, author, note, edited_at, changed, card"


def revision_from_row(card_id: str, row: tuple) -> Revision:
    """A Revision from a finding_revisions row selected as ``REVISION_COLUMNS``."""
    return Revision(card_id, row[0], row[1], row[2], row[3], timestamp(row[4]), list(row[5]),
                    Card.from_dict(json.loads(row[6]), "card"))


def update_card(lab: Lab, card_id: str, expected_version: int, changes: dict[str, Any] | None = None, *, author: str = "",
                note: str = "", refresh_evidence: bool = False, **fields: Any) -> Card:
    """Save an edit as the next revision, if the card is still at ``expected_version``.

    ``changes`` and keyword fields name what to set (title, claim, label, description, confidence,
    status, tags, notes, examples, features). Features kept from the current revision keep their
    snapshot; added ones get a fresh snapshot. ``refresh_evidence`` re-freezes every feature whose
    run still exists (the others keep theirs). An edit that changes nothing writes nothing and
    returns the card as stored. Raises ``CardChangedError`` when the card moved on."""
    check_card_id(card_id)
    if expected_version is None:
        raise LabError("an edit must name the revision it started from (expected_version): read the card first")
    values = check_fields({**(changes or {}), **fields})
    author, note = check_author(author), check_note(note)
    current = get_card(lab, card_id)
    check_version(current, expected_version)  # early, before taking snapshots; checked again inside the transaction
    snaps: list[PendingSnapshot] = []
    if "features" in values or refresh_evidence:
        wanted = values.get("features", current.features)
        old = {f.key: f for f in current.features}
        live = run_rows(lab, sorted({r.run_id for r in wanted}))
        to_snap = [replace(r, snapshot_id=None) for r in wanted if r.key not in old or (refresh_evidence and r.run_id in live)]
        fresh, snaps = feature_snapshots(lab, resolve_refs(lab, to_snap))
        by_key = {r.key: r for r in fresh}
        values["features"] = [by_key.get(r.key) or old[r.key] for r in wanted]

    def build(_con, stored: Card) -> Card:
        return replace(stored, **values)

    return _save(lab, card_id, expected_version, "edit", author, note, build, snaps)


def delete_card(lab: Lab, card_id: str, expected_version: int | None = None, *, author: str = "", note: str = "") -> Card:
    """Mark the card deleted (a revision like any other: its history and evidence stay, it leaves
    lists and searches, ``restore_card`` brings it back). ``purge_card`` removes it for good."""
    check_card_id(card_id)
    author, note = check_author(author), check_note(note)
    ts = timestamp(utcnow())
    return _save(lab, card_id, expected_version, "delete", author, note,
                 lambda _con, c: c if c.deleted else replace(c, deleted_at=ts), allow_deleted=True)


def restore_card(lab: Lab, card_id: str, expected_version: int | None = None, *, author: str = "", note: str = "") -> Card:
    check_card_id(card_id)
    author, note = check_author(author), check_note(note)
    return _save(lab, card_id, expected_version, "restore", author, note, lambda _con, c: replace(c, deleted_at=None),
                 allow_deleted=True)


def purge_card(lab: Lab, card_id: str, expected_version: int | None = None) -> dict[str, Any]:
    """Remove the card, its history and its evidence rows for good; of its snapshots, remove only
    those no other card (at any revision) or attached evidence refers to. One transaction."""
    check_card_id(card_id)
    _require_db(lab, card_id)
    with transaction(lab) as con:
        check_version(_stored_card(con, card_id), expected_version)
        mine = [r[0] for r in con.execute(
            "SELECT snapshot_id FROM finding_features WHERE card_id = ? UNION SELECT snapshot_id FROM finding_evidence WHERE "
            "card_id = ?",
            [card_id, card_id]).fetchall()]
        for table in ("finding_features", "finding_evidence", "finding_revisions", "findings"):
            con.execute(f"DELETE FROM {table} WHERE card_id = ?", [card_id])
        orphans = [r[0] for r in con.execute(
            "SELECT snapshot_id FROM (SELECT unnest(?) AS snapshot_id) WHERE snapshot_id NOT IN "
            "(SELECT snapshot_id FROM finding_features UNION SELECT snapshot_id FROM finding_evidence)", [mine]).fetchall()]
        if orphans:
            con.execute("DELETE FROM evidence_snapshots WHERE snapshot_id IN (SELECT unnest(?))", [orphans])
    return {"card_id": card_id, "snapshots_removed": sorted(orphans), "snapshots_kept": sorted(set(mine) - set(orphans))}


def attach_evidence(lab: Lab, card_id: str, kind: str, data: dict[str, Any], note: str = "", expected_version: int | None = None,
                    *, author: str = "") -> Card:
    """Attach other evidence (e.g. an intervention result) to a card, frozen by content hash, as a
    new revision. ``expected_version`` None attaches to whatever revision is current (attaching
    adds and never overwrites an edit); give it to make the attachment conditional."""
    check_card_id(card_id)
    kind, note, author = check_kind(kind), check_note(note), check_author(author)
    if not isinstance(data, dict):
        raise LabError(f"evidence data must be a dict (JSON object), got {type(data).__name__}")
    if kind == "feature":
        raise LabError("evidence kind 'feature' is the cards' own feature snapshots: add the feature to the card instead")
    run_id = data.get("run_id") if isinstance(data.get("run_id"), str) else None
    feature = data.get("feature") if isinstance(data.get("feature"), int) and not isinstance(data.get("feature"), bool) else None
    snap = make_snapshot(kind, data, run_id, feature)
    size = len(snap.text.encode("utf-8"))
    if size > EVIDENCE_BYTES_MAX:
        raise LabError(f"evidence is {size:,} bytes as JSON, over the limit of {EVIDENCE_BYTES_MAX:,}: keep the results, drop "
                       "raw tensors")
    ts = timestamp(utcnow())

    def build(con, c: Card) -> Card:
        no = 1 + max((e.evidence_no for e in c.evidence), default=0)
        ev = Evidence(no, kind, snap.snapshot_id, note, ts, author)
        con.execute("INSERT INTO finding_evidence VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [card_id, no, kind, snap.snapshot_id, note, parse_timestamp(ts), author, c.revision + 1])
        return replace(c, evidence=[*c.evidence, ev])

    return _save(lab, card_id, expected_version, "evidence", author, note, build, [snap])
