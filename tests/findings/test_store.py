"""Cards in a real lab: create with a frozen snapshot, a revision per edit, reading any revision,
the version check (sequential, threads, processes), delete / restore / purge, attached evidence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import db
from core.errors import LabError
from findings import (
    CardChangedError,
    CardNotFoundError,
    attach_evidence,
    card_evidence,
    card_from_feature,
    card_history,
    create_card,
    delete_card,
    get_card,
    load_snapshot,
    purge_card,
    restore_card,
    search_cards,
    update_card,
)
from findings.evidence import json_safe
from tests.helpers import REPO


def test_card_from_feature_prefills_from_the_analysis_and_freezes_the_inspector_payload(cards_lab):
    from engine.analysis.queries import feature_detail

    c = cards_lab
    detail = feature_detail(c.lab, c.run_id, c.feature)
    card = card_from_feature(c.lab, c.run_id, c.feature, author="alice")
    f = detail["feature"]
    assert (card.revision, card.status, card.author, card.updated_by) == (1, "draft", "alice", "alice")
    assert card.label == f["label"]
    assert card.title == (f["label"] if f["label_reliable"] else f"no reliable label (best guess: {f['label']})")
    assert f"Feature {c.feature}" in card.claim.replace("feature", "Feature", 1) and f"{f['label_score']:.2f}" in card.claim
    # The prefilled confidence follows the score's interval (engine.analysis.label_trust), never high when unreliable.
    expected = ("low" if not f["label_reliable"] else
                "high" if f["label_score_low"] >= 0.8 and f["label_precision"] >= 0.5 else "medium")
    assert card.confidence == expected
    assert card.tags == [f["class"]]
    assert card.description.startswith("Fires most on:")
    (ref,) = card.features
    assert (ref.run_id, ref.feature, ref.layer, ref.hook) == (c.run_id, c.feature, 2, "mlp_out")
    snap = load_snapshot(c.lab, ref.snapshot_id)
    assert snap["kind"] == "feature" and snap["run_id"] == c.run_id and snap["feature"] == c.feature
    assert snap["data"]["detail"] == json_safe(detail)  # the whole inspector payload, as the researcher saw it
    assert snap["data"]["run"]["d_sae"] == c.d_sae and snap["data"]["run"]["model"] == "all-MiniLM-L6-v2"
    assert get_card(c.lab, card.card_id) == card
    overridden = card_from_feature(c.lab, c.run_id, c.feature, title="My title", tags=["mine"], status="supported")
    assert (overridden.title, overridden.tags, overridden.status, overridden.label) == ("My title", ["mine"],
                                                                                        "supported", f["label"])
    assert overridden.features[0].snapshot_id == ref.snapshot_id  # same evidence, one shared snapshot row
    assert db.query_rows(c.lab, "SELECT count(*) FROM evidence_snapshots")[0][0] == 1


def test_every_edit_is_a_revision_and_any_revision_can_be_read(cards_lab):
    c = cards_lab
    card = create_card(c.lab, "first title", [(c.run_id, c.feature)], claim="claim 1", author="alice")
    r2 = update_card(c.lab, card.card_id, 1, title="second title", author="bob", note="better title")
    r3 = update_card(c.lab, card.card_id, 2, {"status": "supported", "tags": ["syntax"]}, confidence="high", author="carol")
    r4 = update_card(c.lab, card.card_id, 3, features=[(c.run_id, c.feature), (c.run_id, c.feature2)], author="bob")
    assert [r2.revision, r3.revision, r4.revision] == [2, 3, 4]
    assert r4.features[0] == card.features[0]  # a kept feature keeps its snapshot
    assert r4.features[1].feature == c.feature2 and r4.features[1].snapshot_id not in (None, card.features[0].snapshot_id)
    history = card_history(c.lab, card.card_id)
    assert [(h.revision, h.action, h.author, h.changed) for h in history] == [
        (1, "create", "alice", []), (2, "edit", "bob", ["title"]), (3, "edit", "carol", ["confidence", "status", "tags"]),
        (4, "edit", "bob", ["features"])]
    assert history[1].note == "better title"
    assert get_card(c.lab, card.card_id, 1) == card
    assert get_card(c.lab, card.card_id, 2).title == "second title" and get_card(c.lab, card.card_id, 2).status == "draft"
    assert get_card(c.lab, card.card_id) == r4 == history[-1].card
    assert (r4.created_at, r4.author) == (card.created_at, "alice") and r4.updated_at > card.updated_at
    with pytest.raises(LabError, match="has revisions 1 to 4, not 9"):
        get_card(c.lab, card.card_id, 9)
    assert get_card(c.lab, card.card_id, np.int64(2)) == r2  # numbers as a DataFrame hands them to the app
    # an edit that changes nothing writes nothing
    assert update_card(c.lab, card.card_id, 4, title="second title") == r4
    assert len(card_history(c.lab, card.card_id)) == 4
    # the index tables follow the current revision; finding_features keeps every revision's refs
    assert db.query_rows(c.lab, "SELECT revision, title, status, tags FROM findings WHERE card_id = ?", [card.card_id]) == [
        (4, "second title", "supported", ["syntax"])]
    assert db.query_rows(c.lab, "SELECT revision, count(*) FROM finding_features WHERE card_id = ? GROUP BY ALL ORDER BY 1",
                         [card.card_id]) == [(1, 1), (2, 1), (3, 1), (4, 2)]


def test_a_stale_save_is_refused_and_overwrites_nothing(cards_lab):
    c = cards_lab
    card = create_card(c.lab, "t", [(c.run_id, c.feature)], author="alice")
    tab_a = get_card(c.lab, card.card_id)
    tab_b = get_card(c.lab, card.card_id)
    saved = update_card(c.lab, card.card_id, tab_a.revision, notes="from tab A", author="alice")
    with pytest.raises(CardChangedError) as e:
        update_card(c.lab, card.card_id, tab_b.revision, notes="from tab B", author="bob")
    assert str(e.value).startswith(f"card {card.card_id} changed since you opened it (now revision 2 by alice at ")
    assert str(e.value).endswith("reload it and reapply your edit") and "\n" not in str(e.value)
    assert get_card(c.lab, card.card_id) == saved and saved.notes == "from tab A"
    assert len(card_history(c.lab, card.card_id)) == 2
    for stale in (lambda: delete_card(c.lab, card.card_id, 1), lambda: purge_card(c.lab, card.card_id, 1),
                  lambda: attach_evidence(c.lab, card.card_id, "note", {"x": 1}, expected_version=1)):
        with pytest.raises(CardChangedError):
            stale()
    assert get_card(c.lab, card.card_id) == saved


def test_two_threads_saving_the_same_revision_one_wins(cards_lab):
    c = cards_lab
    card = create_card(c.lab, "t", [(c.run_id, c.feature)])
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def save(who: str) -> None:
        barrier.wait()
        try:
            update_card(c.lab, card.card_id, 1, notes=f"by {who}", author=who)
            results[who] = "saved"
        except CardChangedError:
            results[who] = "changed"

    threads = [threading.Thread(target=save, args=(w,)) for w in ("a", "b")]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert sorted(results.values()) == ["changed", "saved"]
    winner = next(w for w, r in results.items() if r == "saved")
    final = get_card(c.lab, card.card_id)
    assert (final.revision, final.notes, final.updated_by) == (2, f"by {winner}", winner)


def test_two_processes_saving_the_same_revision_one_wins(cards_lab):
    """Two app processes (or a CLI and the app) on one lab file: DuckDB's lock plus the
    compare-and-set inside the transaction let exactly one save through."""
    c = cards_lab
    card = create_card(c.lab, "t", [(c.run_id, c.feature)])
    start = time.time() + 2.5  # both processes import, then save at the same moment
    code = ("import sys, time; from core.lab import Lab; from findings import update_card, CardChangedError\n"
            "time.sleep(max(0, float(sys.argv[3]) - time.time()))\n"
            "try:\n    update_card(Lab.at(sys.argv[1]), sys.argv[2], 1, notes=sys.argv[4], author=sys.argv[4]); print('saved')\n"
            "except CardChangedError as e:\n    print('changed')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(c.lab.root), card.card_id, str(start), who], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
             for who in ("p1", "p2")]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert sorted(o[0].strip() for o in outs) == ["changed", "saved"]
    final = get_card(c.lab, card.card_id)
    assert final.revision == 2 and len(card_history(c.lab, card.card_id)) == 2 and final.notes == final.updated_by


def test_delete_restore_and_purge_keep_snapshots_other_cards_share(cards_lab):
    c = cards_lab
    a = create_card(c.lab, "card a", [(c.run_id, c.feature), (c.run_id, c.feature2)])
    b = create_card(c.lab, "card b", [(c.run_id, c.feature)])  # shares a's first snapshot
    shared, own = a.features[0].snapshot_id, a.features[1].snapshot_id
    assert b.features[0].snapshot_id == shared
    a = attach_evidence(c.lab, a.card_id, "intervention", {"run_id": c.run_id, "feature": c.feature, "kl": 0.25}, note="ablation")
    ev = a.evidence[0].snapshot_id

    deleted = delete_card(c.lab, a.card_id, a.revision, author="alice", note="duplicate")
    assert deleted.deleted and deleted.revision == a.revision + 1
    assert [x.card_id for x in search_cards(c.lab)] == [b.card_id]
    assert {x.card_id for x in search_cards(c.lab, include_deleted=True)} == {a.card_id, b.card_id}
    with pytest.raises(LabError, match="is deleted: restore it first"):
        update_card(c.lab, a.card_id, deleted.revision, title="x")
    restored = restore_card(c.lab, a.card_id, deleted.revision)
    assert not restored.deleted and [h.action for h in card_history(c.lab, a.card_id)][-2:] == ["delete", "restore"]

    res = purge_card(c.lab, a.card_id)
    assert res["snapshots_kept"] == [shared] and sorted(res["snapshots_removed"]) == sorted([own, ev])
    with pytest.raises(CardNotFoundError, match=f"no card '{a.card_id}'"):
        get_card(c.lab, a.card_id)
    for table in ("findings", "finding_revisions", "finding_features", "finding_evidence"):
        assert db.query_rows(c.lab, f"SELECT count(*) FROM {table} WHERE card_id = ?", [a.card_id])[0][0] == 0
    assert {r[0] for r in db.query_rows(c.lab, "SELECT snapshot_id FROM evidence_snapshots")} == {shared}
    # the other card still stands, evidence included
    still = get_card(c.lab, b.card_id)
    assert card_evidence(c.lab, still)[shared]["data"]["detail"]["feature"]["feature"] == c.feature
    purge_card(c.lab, b.card_id)
    assert db.query_rows(c.lab, "SELECT count(*) FROM evidence_snapshots")[0][0] == 0


def test_an_old_revision_keeps_its_snapshot_after_refresh_and_purge_of_another_card(cards_lab):
    """A snapshot only an old revision refers to is still "referred to": purging another card
    that shares it must not take it away from that history."""
    c = cards_lab
    a = create_card(c.lab, "a", [(c.run_id, c.feature)])
    b = create_card(c.lab, "b", [(c.run_id, c.feature)])
    old = a.features[0].snapshot_id
    a2 = update_card(c.lab, a.card_id, 1, features=[(c.run_id, c.feature2)])  # a now refers to another snapshot
    purge_card(c.lab, b.card_id)
    assert load_snapshot(c.lab, old)["data"]["feature"] == c.feature  # still held for a's revision 1
    assert get_card(c.lab, a.card_id, 1).features[0].snapshot_id == old and a2.features[0].snapshot_id != old


def test_attached_evidence_is_frozen_by_content_and_shown_at_its_revision(cards_lab):
    c = cards_lab
    card = create_card(c.lab, "t", [(c.run_id, c.feature)])
    data = {"run_id": c.run_id, "feature": c.feature, "alpha": -4.0, "token_movers": [{"token": "<def>", "delta": 1.5}],
            "nested": {"nan_becomes_null": float("nan")}}
    r2 = attach_evidence(c.lab, card.card_id, "intervention", data, note="ablating it removes 'def'", author="ivy")
    (ev,) = r2.evidence
    assert (ev.evidence_no, ev.kind, ev.note, ev.attached_by, r2.revision) == (1, "intervention",
                                                                               "ablating it removes 'def'", "ivy", 2)
    snap = load_snapshot(c.lab, ev.snapshot_id)
    assert snap["data"] == {**data, "nested": {"nan_becomes_null": None}} and (snap["run_id"],
                                                                               snap["feature"]) == (c.run_id, c.feature)
    r3 = attach_evidence(c.lab, card.card_id, "intervention", data, expected_version=2)  # same data: same snapshot row
    assert [e.evidence_no for e in r3.evidence] == [1, 2] and r3.evidence[1].snapshot_id == ev.snapshot_id
    assert db.query_rows(c.lab, "SELECT count(*) FROM evidence_snapshots WHERE kind = 'intervention'")[0][0] == 1
    assert get_card(c.lab, card.card_id, 1).evidence == [] and get_card(c.lab, card.card_id, 2).evidence == [ev]
    assert db.query_rows(c.lab, "SELECT evidence_no, revision FROM finding_evidence WHERE card_id = ? ORDER BY 1",
                         [card.card_id]) == [(1, 2), (2, 3)]
    for bad, message in ((("Bad Kind", {}), "evidence kind 'Bad Kind'"), (("feature", {}), "kind 'feature' is the cards' own"),
                         (("intervention", [1, 2]), "must be a dict"), (("intervention", {"x": object()}), "JSON cannot store"),
                         (("intervention", {"blob": "x" * 2_100_000}), "over the limit of 2,000,000")):
        with pytest.raises(LabError, match=message):
            attach_evidence(c.lab, card.card_id, *bad)
    assert get_card(c.lab, card.card_id) == r3
    json.dumps(r3.to_dict())  # a card is plain JSON data
