"""A card outlives its run: deleting or re-analysing the run leaves the card and its evidence
readable, searchable and exportable; a run without an analysis still gets a card."""

from __future__ import annotations

import pytest

import db
from core.errors import LabError
from findings import (
    card_evidence,
    card_from_feature,
    card_history,
    cards_for_feature,
    create_card,
    export_markdown,
    get_card,
    live_status,
    load_snapshot,
    search_cards,
    update_card,
)


def test_deleting_the_run_leaves_the_card_and_its_evidence_readable(cards_lab, tmp_path):
    from engine.run_admin import delete_run

    c = cards_lab
    card = card_from_feature(c.lab, c.run_id, c.feature, author="alice")
    card = update_card(c.lab, card.card_id, 1, status="supported", author="alice")
    before = card_evidence(c.lab, card)
    assert live_status(c.lab, card)[0]["state"] == "live"

    deleted = delete_run(c.lab, c.run_id)
    assert deleted["runs"] == 1 and deleted["features"] == c.d_sae and deleted["feature_context_rows"] > 0
    assert not c.lab.run_dir(c.run_id).exists()
    assert db.query_rows(c.lab, "SELECT count(*) FROM features WHERE run_id = ?", [c.run_id])[0][0] == 0

    assert get_card(c.lab, card.card_id) == card and get_card(c.lab, card.card_id, 1).status == "draft"
    assert card_evidence(c.lab, card) == before  # contexts, statistics, label and score, token effects: all still there
    detail = before[card.features[0].snapshot_id]["data"]["detail"]
    assert detail["contexts"] and detail["token_effects"]["up"] and detail["feature"]["label_score"] is not None
    assert live_status(c.lab, card) == [{**live_status(c.lab, card)[0], "state": "run-deleted", "run_exists": False,
                                         "analysis_exists": False}]
    assert [x.card_id for x in cards_for_feature(c.lab, c.run_id, c.feature)] == [card.card_id]
    assert [x.card_id for x in search_cards(c.lab, run_id=c.run_id)] == [card.card_id]
    (md,) = export_markdown(c.lab, [card.card_id], tmp_path / "md")
    assert "#### Top contexts on prose" in md.read_text() and "detection score" in md.read_text()

    # the card can still be edited; refreshing keeps the frozen evidence of a deleted run
    edited = update_card(c.lab, card.card_id, 2, notes="run deleted, claim stands", refresh_evidence=True)
    assert edited.features == card.features and edited.revision == 3
    with pytest.raises(LabError, match=f"unknown run '{c.run_id}'"):
        update_card(c.lab, card.card_id, 3, features=[(c.run_id, c.feature), (c.run_id, c.feature2)])
    with pytest.raises(LabError, match=f"unknown run '{c.run_id}'"):
        card_from_feature(c.lab, c.run_id, c.feature)
    with pytest.raises(LabError, match=f"unknown run '{c.run_id}'"):
        delete_run(c.lab, c.run_id)


def test_reanalysing_the_run_changes_nothing_a_card_shows(cards_lab):
    from engine.analysis.analyze import analyze_run
    from engine.analysis.queries import feature_detail

    c = cards_lab
    card = card_from_feature(c.lab, c.run_id, c.feature)
    sid = card.features[0].snapshot_id
    frozen = load_snapshot(c.lab, sid)
    analyze_run(c.lab, c.run_id, seed=1)  # another seed: other quantile samples, other map
    live = feature_detail(c.lab, c.run_id, c.feature)
    assert live["analysis"]["created_at"].isoformat() != frozen["data"]["detail"]["analysis"]["created_at"]
    assert load_snapshot(c.lab, sid) == frozen and get_card(c.lab, card.card_id) == card
    assert live_status(c.lab, card)[0]["state"] == "reanalysed"

    refreshed = update_card(c.lab, card.card_id, 1, refresh_evidence=True, note="re-checked on the new analysis")
    new_sid = refreshed.features[0].snapshot_id
    assert new_sid != sid and load_snapshot(c.lab, new_sid)["data"]["detail"]["analysis"]["created_at"] == \
        live["analysis"]["created_at"].isoformat()
    assert card_history(c.lab, card.card_id)[-1].changed == ["features"]
    assert get_card(c.lab, card.card_id, 1).features[0].snapshot_id == sid  # the old revision shows the old evidence
    assert live_status(c.lab, refreshed)[0]["state"] == "live"


def test_a_run_without_analysis_gets_a_card_whose_snapshot_says_so(cards_lab):
    from engine.analysis.write import delete_analysis

    c = cards_lab
    delete_analysis(c.lab, c.other_run)
    card = card_from_feature(c.lab, c.other_run, 3)
    assert card.title == "feature 3 (no analysis yet)" and card.confidence == "low" and card.label == ""
    data = load_snapshot(c.lab, card.features[0].snapshot_id)["data"]
    assert data["detail"] is None and "had no feature analysis" in data["note"] and data["run"]["run_id"] == c.other_run
    assert live_status(c.lab, card)[0]["state"] == "no-analysis"
    with pytest.raises(LabError, match=f"feature {c.d_sae} does not exist: run '{c.other_run}' has features 0 to {c.d_sae - 1}"):
        create_card(c.lab, "t", [(c.other_run, c.d_sae)])
