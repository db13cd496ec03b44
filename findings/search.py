"""Finding cards again: by text, tag, status, run and feature.

Text search is ILIKE over the card's own fields (DuckDB's full-text extension would have to be
downloaded, and the lab works offline); every word must occur somewhere in the card, and ``%``
and ``_`` in what the person typed mean themselves, not wildcards.
"""

from __future__ import annotations

import json

from core.errors import LabError
from core.lab import Lab
from findings.model import STATUSES, Card, check_choice, check_feature_index
from findings.store import reader

# Everything a person might remember a card by, in one text per card.
_HAYSTACK = ("concat_ws(chr(10), f.card_id, f.title, f.claim, f.label, f.description, f.notes, "
             "array_to_string(f.tags, chr(10)), array_to_string(f.examples, chr(10)))")


def _like_pattern(word: str) -> str:
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search_cards(lab: Lab, text: str | None = None, tag: str | None = None, status: str | None = None, run_id: str | None = None,
                 feature: int | None = None, include_deleted: bool = False, limit: int | None = None) -> list[Card]:
    """Current cards matching every given filter, most recently updated first.

    ``text``: each whitespace-separated word, case-insensitive, in the id, title, claim, label,
    description, notes, tags or examples. ``tag``: one of the card's tags (case-insensitive).
    ``run_id`` / ``feature``: the card refers to that run / feature index (both: that feature of
    that run). Deleted cards only with ``include_deleted``."""
    where, params = [], []
    if not include_deleted:
        where.append("f.deleted_at IS NULL")
    for word in (text or "").split():
        where.append(f"{_HAYSTACK} ILIKE ? ESCAPE '\\'")
        params.append(_like_pattern(word))
    if tag is not None and str(tag).strip():
        where.append("list_contains(list_transform(f.tags, lambda t: lower(t)), lower(?))")
        params.append(str(tag).strip())
    if status is not None:
        where.append("f.status = ?")
        params.append(check_choice("status", status, STATUSES))
    if run_id is not None or feature is not None:
        cond = ["x.card_id = f.card_id", "x.revision = f.revision"]
        if run_id is not None:
            cond.append("x.run_id = ?")
            params.append(str(run_id))
        if feature is not None:
            cond.append("x.feature = ?")
            params.append(check_feature_index(feature))
        where.append(f"EXISTS (SELECT 1 FROM finding_features x WHERE {' AND '.join(cond)})")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise LabError(f"limit '{limit}' must be a whole number from 0")
    sql = ("SELECT r.card FROM findings f JOIN finding_revisions r ON r.card_id = f.card_id AND r.revision = f.revision"
           + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY f.updated_at DESC, f.card_id"
           + (" LIMIT ?" if limit is not None else ""))
    with reader(lab) as con:
        if con is None:
            return []
        rows = con.execute(sql, params + ([limit] if limit is not None else [])).fetchall()
    return [Card.from_dict(json.loads(r[0]), "card") for r in rows]


def cards_for_feature(lab: Lab, run_id: str, feature: int, include_deleted: bool = False) -> list[Card]:
    """The cards about one feature of one run (what the feature's page lists)."""
    return search_cards(lab, run_id=run_id, feature=feature, include_deleted=include_deleted)


def list_cards(lab: Lab, include_deleted: bool = False) -> list[Card]:
    return search_cards(lab, include_deleted=include_deleted)
