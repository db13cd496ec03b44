"""Export and import: JSON round-trips every field, revision and snapshot (into a lab without the
runs); re-import duplicates nothing; Markdown is one readable file per card; the seed-004 registry
goes out and comes back."""

from __future__ import annotations

import copy
import json

import pytest
from markdown_it import MarkdownIt

import db
from core.errors import LabError
from core.lab import Lab
from findings import (
    attach_evidence,
    card_evidence,
    card_from_feature,
    card_history,
    create_card,
    delete_card,
    export_json,
    export_markdown,
    export_registry,
    get_card,
    import_json,
    import_registry,
    search_cards,
    update_card,
)
from tests.findings.helpers import fingerprint
from tests.helpers import copy_lab


def _without_time(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "exported_at"}


def _populate(c):
    a = card_from_feature(c.lab, c.run_id, c.feature, author="alice")
    a = update_card(c.lab, a.card_id, 1, status="supported", notes="<b>checked</b>\n# twice",
                    tags=["syntax", "déjà vu"], author="bob")
    a = attach_evidence(c.lab, a.card_id, "intervention",
                        {"run_id": c.run_id, "feature": c.feature, "kl": [0.1, 0.2]}, note="ablation")
    b = create_card(c.lab, "two features", [(c.run_id, c.feature), (c.other_run, c.feature2)], examples=["ex 1", "ex 2"])
    d = create_card(c.lab, "gone", [(c.run_id, c.feature2)])
    d = delete_card(c.lab, d.card_id)
    return a, b, d


def test_json_round_trip_reproduces_every_field_revision_and_snapshot(cards_lab, tmp_path):
    c = cards_lab
    a, b, d = _populate(c)
    out = export_json(c.lab, include_deleted=True)
    assert [x["card_id"] for x in out["cards"]] == [a.card_id, b.card_id, d.card_id]  # oldest first
    assert len(out["cards"][0]["revisions"]) == 3 and len(out["snapshots"]) == 4
    text = json.dumps(out, ensure_ascii=False)

    fresh = Lab.at(tmp_path / "other")  # a lab without those runs, or any run
    summary = import_json(fresh, json.loads(text))
    assert summary == {"created": [a.card_id, b.card_id, d.card_id], "updated": [], "unchanged": [], "snapshots_added": 4}
    assert _without_time(export_json(fresh, include_deleted=True)) == _without_time(out)
    for card in (a, b, d):
        assert get_card(fresh, card.card_id) == card
        assert card_history(fresh, card.card_id) == card_history(c.lab, card.card_id)
        assert card_evidence(fresh, card) == card_evidence(c.lab, card)
    assert get_card(fresh, a.card_id, 1) == get_card(c.lab, a.card_id, 1)
    assert [x.card_id for x in search_cards(fresh, run_id=c.run_id)] == [b.card_id, a.card_id]
    assert db.query_rows(fresh, "SELECT card_id, evidence_no, kind, revision FROM finding_evidence") == \
        db.query_rows(c.lab, "SELECT card_id, evidence_no, kind, revision FROM finding_evidence")
    assert db.query_rows(fresh, "SELECT * FROM findings ORDER BY card_id") == db.query_rows(c.lab, "SELECT * FROM findings "
                                                                                                   "ORDER BY card_id")

    # re-importing the same file duplicates nothing
    before = fingerprint(fresh)
    assert import_json(fresh, json.loads(text)) == {"created": [], "updated": [], "unchanged": [a.card_id, b.card_id, d.card_id],
                                                    "snapshots_added": 0}
    assert fingerprint(fresh) == before

    # a later export of the same card extends the history there
    update_card(c.lab, b.card_id, 1, status="refuted", note="counter-example found")
    assert import_json(fresh, export_json(c.lab, [b.card_id]))["updated"] == [b.card_id]
    assert card_history(fresh, b.card_id) == card_history(c.lab, b.card_id)


def test_import_refuses_conflicts_and_damaged_files_and_writes_nothing(cards_lab, tmp_path):
    c = cards_lab
    a, b, _ = _populate(c)
    out = export_json(c.lab)
    fresh = Lab.at(tmp_path / "other")
    import_json(fresh, out)
    update_card(fresh, a.card_id, 3, title="edited over there")  # the two labs' histories diverge
    update_card(c.lab, a.card_id, 3, title="edited here")
    before = fingerprint(fresh)
    diverged = export_json(c.lab)
    with pytest.raises(LabError, match=f"card {a.card_id} in this lab differs from the file's .*nothing was imported"):
        import_json(fresh, diverged)

    damaged = copy.deepcopy(out)
    sid = next(iter(damaged["snapshots"]))
    damaged["snapshots"][sid]["data"]["run"]["model"] = "forged"
    bad_cases = [
        (damaged, f"snapshot {sid} does not match its content"),
        ({"cards": []}, "not a findings export"),
        ({**out, "format_version": 99}, "format version 99"),
        ({**out, "snapshots": {}}, "which the file lacks"),
        ({**out, "cards": [{"card_id": a.card_id, "revisions": out["cards"][0]["revisions"][1:]}]}, "misnumbered"),
        ({**out, "cards": [{"card_id": "card-00000000", "revisions": out["cards"][0]["revisions"]}]}, "belongs to another card"),
    ]
    huge = copy.deepcopy(out)
    huge["cards"][0]["revisions"][0]["card"]["description"] = "x" * (1 << 20)
    bad_cases.append((huge, "description is 1,048,576 characters long"))
    for data, message in bad_cases:
        with pytest.raises(LabError, match=message):
            import_json(fresh, data)
    assert fingerprint(fresh) == before


def test_markdown_export_is_one_readable_file_per_card_with_its_evidence(cards_lab, tmp_path):
    c = cards_lab
    a, b, d = _populate(c)
    paths = export_markdown(c.lab, None, tmp_path / "md")
    # A title with no letters or digits (the label of the feature found here may be "_") has no slug.
    a_name = f"{a.card_id}-{_slug(a.title)}.md" if _slug(a.title) else f"{a.card_id}.md"
    assert sorted(p.name for p in paths) == sorted([f"{b.card_id}-two-features.md", a_name])
    text = next(p for p in paths if a.card_id in p.name).read_text(encoding="utf-8")
    snap = card_evidence(c.lab, a)[a.features[0].snapshot_id]["data"]["detail"]
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    headings = [(t.tag, tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"]
    unescape = __import__("re").compile(r"\\(.)")  # the heading's source has Markdown's specials escaped
    assert [(h[0], unescape.sub(r"\1", h[1])) for h in headings if h[0] == "h1"] == [("h1", a.title)]
    assert [h[1] for h in headings if h[0] == "h2"] == ["Claim", "Description", "Notes", "Evidence", "History"]
    assert f"detection score {snap['feature']['label_score']:.3f}" in text
    top = snap["contexts"]["prose"]["top"][0]
    assert f"`{top['activation']:.3f}`" in text and "⟦**" in text  # the strongest context, its token marked
    assert snap["token_effects"]["up"][0]["token"].replace("#", "\\#") in text
    assert "### Attached evidence 1: intervention" in text and '"kl": [' in text
    assert "| 2 |" in text and "status, tags, notes" in text  # the history table
    assert "\\<b\\>checked\\</b\\>" in text and "<b>" not in text and "\n# twice" not in text


def _slug(title: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].strip("-")


def test_registry_export_has_the_seed_shape_and_imports_back(cards_lab, tmp_path):
    c = cards_lab
    a = card_from_feature(c.lab, c.run_id, c.feature, author="alice")
    a = update_card(c.lab, a.card_id, 1, label="python_def", description="fires on def", confidence="high")
    create_card(c.lab, "numbers", [(c.run_id, c.feature2)], label="numbers", examples=["1, 2, 3"], confidence="medium")
    reg = export_registry(c.lab, run_id=c.run_id)
    assert set(reg) == {str(c.feature), str(c.feature2)}
    assert all(set(e) == {"name", "description", "examples", "confidence"} for e in reg.values())
    assert reg[str(c.feature2)] == {"name": "numbers", "description": "", "examples": ["1, 2, 3"], "confidence": "medium"}
    entry = reg[str(c.feature)]
    assert (entry["name"], entry["description"], entry["confidence"]) == ("python_def", "fires on def", "high")
    assert 1 <= len(entry["examples"]) <= 5 and all("⟦" in e for e in entry["examples"])  # frozen top contexts
    assert set(export_registry(c.lab)) == {f"{c.run_id}:{c.feature}", f"{c.run_id}:{c.feature2}"}

    # into another copy of the lab without cards: the same registry comes back out
    other = copy_lab(c.lab.root, tmp_path / "copy")
    for card in search_cards(other):
        from findings import purge_card

        purge_card(other, card.card_id)
    res = import_registry(other, json.loads(json.dumps(reg)), run_id=c.run_id, author="importer")
    assert len(res["created"]) == 2 and res["skipped"] == []
    assert export_registry(other, run_id=c.run_id) == reg
    made = get_card(other, res["created"][0])
    assert made.status == "draft" and made.author == "importer" and made.features[0].snapshot_id
    assert card_history(other, made.card_id)[0].note == "imported from a feature registry"
    again = import_registry(other, reg, run_id=c.run_id)  # the same registry twice creates nothing twice
    assert again["created"] == [] and sorted(again["skipped"]) == sorted(f"{c.run_id}:{f}" for f in (c.feature, c.feature2))


def test_the_seed_registry_example_imports(cards_lab):
    c = cards_lab
    seed = {  # seed 004's registry, its "examples": [...] placeholder written out
        1: {"name": "mathematical_equations", "description": "Activates on mathematical formulas and equations",
            "examples": ["2+2=4", "E=mc²", "ax²+bx+c=0"], "confidence": "high"},
        5: {"name": "geographic_locations", "description": "Activates on city and country names",
            "examples": ["Paris, France", "Tokyo, Japan"], "confidence": "high"},
        99: {"name": "unknown_pattern", "description": "No clear pattern identified yet", "examples": [], "confidence": "low"},
    }
    before = fingerprint(c.lab)
    for data, run, message in [
        (seed, None, "registry key '1' is a bare feature index: name the run"),
        ({f"{c.run_id}:1": seed[1]}, c.other_run, f"is for run {c.run_id}, not {c.other_run}"),
        ({1: {**seed[1], "examples": [...]}}, c.run_id, "examples must be texts"),
        ({1: {**seed[1], "notes": "x"}}, c.run_id, "unknown key 'notes'"),
        ({1: {**seed[1], "confidence": "certain"}}, c.run_id, "confidence 'certain' is not one of low, medium, high"),
        ({1: {"description": "no name"}}, c.run_id, "has no name"),
        ({1: seed[1], c.d_sae: seed[5]}, c.run_id, f"feature {c.d_sae} does not exist"),
        ({1: seed[1]}, "no-such-run", "unknown run 'no-such-run'"),
        ([seed[1]], c.run_id, "a feature registry is a JSON object"),
    ]:
        with pytest.raises(LabError, match=message):
            import_registry(c.lab, data, run_id=run)
    assert fingerprint(c.lab) == before  # a bad entry anywhere: nothing imported
    res = import_registry(c.lab, json.loads(json.dumps(seed)), run_id=c.run_id)
    cards = {get_card(c.lab, cid).label: get_card(c.lab, cid) for cid in res["created"]}
    assert set(cards) == {"mathematical_equations", "geographic_locations", "unknown_pattern"}
    geo = cards["geographic_locations"]
    assert (geo.features[0].feature, geo.confidence, geo.examples, geo.description) == (
        5, "high", ["Paris, France", "Tokyo, Japan"], "Activates on city and country names")
