"""Findings cards: curated feature labels with their history and evidence, kept across runs.

A card holds what a researcher concluded about one or more SAE features (title, claim, label,
description, confidence, status, tags, notes, examples) and, for each feature, a snapshot of the
evidence they saw (the inspector's statistics, contexts, automatic label and score, token effects)
frozen when it was saved. Every save is a revision; a stale save is refused, never merged. Tables
``findings``, ``finding_revisions``, ``finding_features``, ``finding_evidence`` and
``evidence_snapshots`` (db/migrations/0004_findings.sql).

Modules: ``model`` (the card and its validation), ``evidence`` (snapshots), ``store`` (create,
edit, delete, history), ``prefill`` (a card from the inspector in one step), ``search``,
``render`` (escaping for HTML and Markdown), ``export`` (Markdown, JSON, the seed-004 registry),
``cli`` (``python -m engine findings ...``).
"""

from findings.evidence import card_evidence, live_status, load_snapshot, load_snapshots
from findings.export import export_json, export_markdown, export_registry, import_json, import_registry
from findings.model import CONFIDENCES, STATUSES, Card, CardChangedError, CardNotFoundError, Evidence, FeatureRef, Revision
from findings.prefill import card_from_feature
from findings.render import card_markdown, context_html, context_markdown, escape_html, escape_markdown
from findings.search import cards_for_feature, list_cards, search_cards
from findings.store import (
    attach_evidence,
    card_history,
    create_card,
    delete_card,
    get_card,
    purge_card,
    restore_card,
    update_card,
)

__all__ = [
    "CONFIDENCES", "STATUSES", "Card", "CardChangedError", "CardNotFoundError", "Evidence", "FeatureRef", "Revision",
    "attach_evidence", "card_evidence", "card_from_feature", "card_history", "card_markdown", "cards_for_feature", "context_html",
    "context_markdown", "create_card", "delete_card", "escape_html", "escape_markdown", "export_json", "export_markdown",
    "export_registry", "get_card", "import_json", "import_registry", "list_cards", "live_status",
    "load_snapshot", "load_snapshots",
    "purge_card", "restore_card", "search_cards", "update_card",
]
