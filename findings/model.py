"""What a findings card is, and what input a card accepts.

A card is a researcher's conclusion about one or more SAE features: a claim, a label, how sure
they are, and references to the features with the evidence frozen when it was saved. Every field
here is plain data (``to_dict``/``from_dict`` through ``ConfigBase``), because a card travels: it
is stored as JSON in every revision, exported, imported into another lab.

Validation lives here, next to the fields, so the store, the importer and the CLI refuse the same
things with the same one-line messages. Text is stored verbatim (HTML, Markdown and SQL included:
it is only ever bound as a parameter and escaped when shown); what is refused is what no reader
could use: empty titles, oversize text, control characters, unknown enum values.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
import secrets
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from core.config_base import ConfigBase
from core.errors import LabError

Confidence = Literal["low", "medium", "high"]
Status = Literal["draft", "supported", "refuted"]
Action = Literal["create", "edit", "evidence", "delete", "restore"]
CONFIDENCES: tuple[str, ...] = get_args(Confidence)
STATUSES: tuple[str, ...] = get_args(Status)

# Size limits, in characters. A description is prose a person reads on one page; anything longer
# (a notebook, a dump) belongs in attached evidence, which has its own byte limit.
TITLE_MAX = 200
LABEL_MAX = 200
CLAIM_MAX = 2_000
TEXT_MAX = 100_000  # description and notes
EXAMPLE_MAX = 2_000
EXAMPLES_MAX = 50
TAG_MAX = 50
TAGS_MAX = 32
AUTHOR_MAX = 100
NOTE_MAX = 1_000  # the change note of one revision
FEATURES_MAX = 64
EVIDENCE_BYTES_MAX = 2_000_000  # one attached evidence item, as JSON
EDITABLE = ("title", "claim", "label", "description", "confidence", "status", "tags", "notes", "examples", "features")

_CARD_ID = re.compile(r"^card-[0-9a-f]{8,32}$")
_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{32}$")
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class CardNotFoundError(LabError):
    """The card id names no card in this lab."""


class CardChangedError(LabError):
    """Optimistic concurrency: the card was saved by someone else since the caller read it.

    Raised instead of overwriting, so two browser tabs editing one card never lose an edit
    silently; the caller reloads the card and reapplies its change."""

    exit_code = 4


@dataclass
class FeatureRef(ConfigBase):
    """One feature a card is about, and the evidence snapshot frozen when it was added."""

    run_id: str
    feature: int
    layer: int | None = None
    hook: str | None = None
    snapshot_id: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.run_id, int(self.feature))

    @classmethod
    def coerce(cls, value: Any, where: str = "feature") -> Any:
        """Accept ``(run_id, feature)`` and ``"run_id:feature"`` as well as dicts (CLI and app input)."""
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return {"run_id": value[0], "feature": check_feature_index(value[1])}
        if isinstance(value, dict) and "feature" in value:
            return {**value, "feature": check_feature_index(value["feature"])}
        if isinstance(value, str):
            run, sep, feat = value.rpartition(":")
            if not sep or not run or not feat.strip().isdigit():
                raise LabError(f"{where} '{value}' is not of the form RUN:FEATURE, e.g. 20261121-003750-c062fd:230")
            return {"run_id": run, "feature": int(feat)}
        return value


@dataclass
class Evidence(ConfigBase):
    """Evidence attached to a card besides its features' snapshots (e.g. an intervention result)."""

    evidence_no: int
    kind: str
    snapshot_id: str
    note: str = ""
    attached_at: str = ""
    attached_by: str = ""


@dataclass
class Card(ConfigBase):
    """A findings card at one revision (the current one unless read at an earlier revision)."""

    card_id: str
    revision: int
    title: str
    claim: str = ""
    label: str = ""
    description: str = ""
    confidence: Confidence = "low"
    status: Status = "draft"
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    examples: list[str] = field(default_factory=list)
    author: str = ""
    created_at: str = ""
    updated_at: str = ""
    updated_by: str = ""
    deleted_at: str | None = None
    features: list[FeatureRef] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def snapshot_ids(self) -> list[str]:
        """Every snapshot this revision of the card refers to, features first, without repeats."""
        ids = [f.snapshot_id for f in self.features if f.snapshot_id] + [e.snapshot_id for e in self.evidence]
        return list(dict.fromkeys(ids))


@dataclass
class Revision(ConfigBase):
    """One saved state of a card: who saved it, when, why, which fields changed, and the card."""

    card_id: str
    revision: int
    action: Action
    author: str
    note: str
    edited_at: str
    changed: list[str]
    card: Card


# -- ids and times ---------------------------------------------------------------------------------
def new_card_id() -> str:
    return f"card-{secrets.token_hex(4)}"


def timestamp(value: dt.datetime) -> str:
    """The one text form of a time in cards: naive UTC, ISO 8601 with microseconds (exact round trip)."""
    return value.isoformat(timespec="microseconds")


def parse_timestamp(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


# -- validation ------------------------------------------------------------------------------------
def check_card_id(card_id: Any) -> str:
    if not isinstance(card_id, str) or not _CARD_ID.match(card_id):
        raise LabError(f"'{_short(card_id)}' is not a card id (card-xxxxxxxx): list cards with `python -m engine findings list`")
    return card_id


def check_snapshot_id(snapshot_id: Any, where: str = "snapshot id") -> str:
    if not isinstance(snapshot_id, str) or not _SNAPSHOT_ID.match(snapshot_id):
        raise LabError(f"{where} '{_short(snapshot_id)}' is not a snapshot id (32 hex digits)")
    return snapshot_id


def check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise LabError(f"evidence kind '{_short(kind)}' must be a short lower-case word (letters, digits, - or _), e.g. "
                       "intervention")
    return kind


def check_text(name: str, value: Any, limit: int, *, one_line: bool = False, required: bool = False) -> str:
    """Text as given (never trimmed or rewritten), or a LabError naming the field and the fix."""
    if not isinstance(value, str):
        raise LabError(f"{name} must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise LabError(f"{name} is empty: give the card a {name}")
    if len(value) > limit:
        raise LabError(f"{name} is {len(value):,} characters long, over the limit of {limit:,}: shorten it"
                       + (" (attach long material as evidence instead)" if limit >= TEXT_MAX else ""))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LabError(f"{name} contains characters that are not valid Unicode text (lone surrogates): remove them") from None
    allowed = "" if one_line else "\t\n\r"
    bad = next((c for c in value if c not in allowed and unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        what = "line breaks" if bad in "\n\r" else f"the control character U+{ord(bad):04X}"
        raise LabError(f"{name} contains {what}: {'keep it on one line' if bad in chr(10) + chr(13) else 'remove it'}")
    return value


def check_tags(tags: Any) -> list[str]:
    """Tags are identifiers: surrounding spaces dropped, repeats dropped (first spelling kept)."""
    if isinstance(tags, str):
        raise LabError("tags must be a list of words, not one text: e.g. ['syntax', 'code']")
    if not isinstance(tags, (list, tuple)):
        raise LabError(f"tags must be a list of words, got {type(tags).__name__}")
    out: list[str] = []
    seen: set[str] = set()
    for t in tags:
        t = check_text("a tag", t, TAG_MAX, one_line=True).strip()
        if not t:
            raise LabError("a tag is empty: remove it")
        if "," in t:
            raise LabError(f"tag '{t}' contains a comma: give tags one by one")
        if t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    if len(out) > TAGS_MAX:
        raise LabError(f"{len(out)} tags, over the limit of {TAGS_MAX}: keep the ones that help find the card")
    return out


def check_examples(examples: Any) -> list[str]:
    if isinstance(examples, str) or not isinstance(examples, (list, tuple)):
        raise LabError("examples must be a list of texts")
    if len(examples) > EXAMPLES_MAX:
        raise LabError(f"{len(examples)} examples, over the limit of {EXAMPLES_MAX}: keep the telling ones")
    return [check_text("an example", e, EXAMPLE_MAX) for e in examples]


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise LabError(f"{name} '{_short(value)}' is not one of {', '.join(choices)}: pick one of those")
    return value


def check_author(author: Any) -> str:
    return check_text("author", author if author is not None else "", AUTHOR_MAX, one_line=True)


def check_note(note: Any) -> str:
    return check_text("change note", note if note is not None else "", NOTE_MAX)


def integral(value: Any) -> Any:
    """An integer from anything integral (numpy integers from a DataFrame included), else as given."""
    if isinstance(value, bool):
        return value
    try:
        return operator.index(value)
    except TypeError:
        return value


def check_feature_index(value: Any) -> int:
    value = integral(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LabError(f"feature '{_short(value)}' must be a feature index: a whole number from 0")
    return value


def coerce_refs(features: Any) -> list[FeatureRef]:
    """Feature references from FeatureRefs, dicts, (run, feature) pairs or "run:feature" texts;
    the same (run, feature) twice is kept once."""
    if features is None or isinstance(features, (str, dict, FeatureRef)) or (
            isinstance(features, tuple) and len(features) == 2 and isinstance(features[1], int)):
        features = [features] if features is not None else []
    if not isinstance(features, (list, tuple)):
        raise LabError("features must be a list of (run, feature) references")
    refs: list[FeatureRef] = []
    for i, f in enumerate(features):
        ref = f if isinstance(f, FeatureRef) else FeatureRef.from_dict(FeatureRef.coerce(f, "feature reference"),
                                                                       f"features[{i}]")
        check_text("run id", ref.run_id, 200, one_line=True, required=True)
        ref = replace(ref, feature=check_feature_index(ref.feature))
        if ref.snapshot_id is not None:
            check_snapshot_id(ref.snapshot_id)
        refs.append(ref)
    unique: dict[tuple[str, int], FeatureRef] = {}
    for r in refs:
        unique.setdefault(r.key, r)
    if not unique:
        raise LabError("a card needs at least one feature: give the run and the feature index, e.g. --run RUN --feature 230")
    if len(unique) > FEATURES_MAX:
        raise LabError(f"{len(unique)} features on one card, over the limit of {FEATURES_MAX}: split it into several cards")
    return list(unique.values())


def check_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Validate (and normalise tags of) the editable fields present in ``values``."""
    out = dict(values)
    unknown = sorted(set(out) - set(EDITABLE))
    if unknown:
        raise LabError(f"'{unknown[0]}' is not a card field you can set: use one of {', '.join(EDITABLE)}")
    if "title" in out:
        check_text("title", out["title"], TITLE_MAX, one_line=True, required=True)
    if "label" in out:
        check_text("label", out["label"], LABEL_MAX, one_line=True)
    if "claim" in out:
        check_text("claim", out["claim"], CLAIM_MAX)
    for name in ("description", "notes"):
        if name in out:
            check_text(name, out[name], TEXT_MAX)
    if "confidence" in out:
        check_choice("confidence", out["confidence"], CONFIDENCES)
    if "status" in out:
        check_choice("status", out["status"], STATUSES)
    if "tags" in out:
        out["tags"] = check_tags(out["tags"])
    if "examples" in out:
        out["examples"] = check_examples(out["examples"])
    if "features" in out:
        out["features"] = coerce_refs(out["features"])
    return out


def check_card(card: Card) -> Card:
    """Everything a stored card must satisfy (used on import, where the card comes from a file)."""
    check_card_id(card.card_id)
    if card.revision < 1:
        raise LabError(f"card {card.card_id}: revision {card.revision} must be 1 or more")
    check_fields({name: getattr(card, name) for name in EDITABLE})
    check_author(card.author)
    check_author(card.updated_by)
    for name in ("created_at", "updated_at", "deleted_at"):
        try:
            parse_timestamp(getattr(card, name))
        except (TypeError, ValueError):
            raise LabError(f"card {card.card_id}: {name} '{_short(getattr(card, name))}' is not an ISO time") from None
    if not card.created_at or not card.updated_at:
        raise LabError(f"card {card.card_id}: created_at and updated_at are required")
    for f in card.features:
        if not f.snapshot_id:
            raise LabError(f"card {card.card_id}: feature {f.run_id}:{f.feature} has no evidence snapshot")
    for e in card.evidence:
        check_kind(e.kind)
        check_snapshot_id(e.snapshot_id)
        check_note(e.note)
    return card


def _short(value: Any, n: int = 60) -> str:
    text = str(value)
    return text if len(text) <= n else text[: n - 3] + "..."
