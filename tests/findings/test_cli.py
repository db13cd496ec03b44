"""``python -m engine findings ...``: every action, in process (the engine's parser with the findings
commands added, exactly as ``python -m engine`` runs it: ``findings.cli.main``)."""

from __future__ import annotations

import json

from findings import card_history, get_card, search_cards
from findings.cli import main


def run(capsys, lab, *args: str) -> tuple[int, str, str]:
    code = main(["--lab", str(lab.root), "-q", "findings", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_new_list_show_edit_history_delete_restore(cards_lab, capsys, monkeypatch):
    c = cards_lab
    monkeypatch.setenv("SAE_LAB_AUTHOR", "cli-user")
    code, out, _ = run(capsys, c.lab, "new", "--run", c.run_id, "--feature", str(c.feature), "--tag", "syntax",
                       "--note", "first look")
    assert code == 0 and out.startswith("created card-")
    (card,) = search_cards(c.lab)
    assert (card.tags, card.author) == (["syntax"], "cli-user") and card_history(c.lab, card.card_id)[0].note == "first look"

    code, out, _ = run(capsys, c.lab, "list", "--tag", "syntax")
    assert code == 0 and card.card_id in out and "(1 row)" in out
    code, out, _ = run(capsys, c.lab, "list", "--status", "refuted")
    assert code == 0 and out.strip() == "no cards match"
    code, out, _ = run(capsys, c.lab, "list", "--run", c.run_id, "--feature", str(c.feature), "--json")
    assert [x["card_id"] for x in json.loads(out)] == [card.card_id]

    code, out, _ = run(capsys, c.lab, "edit", card.card_id, "--version", "1", "--set", "status=supported", "--set", "tags=a, b",
                       "--set", "notes=x = y; <b>", "--add-feature", f"{c.run_id}:{c.feature2}", "--author", "bob")
    assert code == 0 and "saved revision 2" in out
    edited = get_card(c.lab, card.card_id)
    assert (edited.status, edited.tags, edited.notes, edited.updated_by) == ("supported", ["a", "b"], "x = y; <b>", "bob")
    assert [f.feature for f in edited.features] == [c.feature, c.feature2]

    code, out, err = run(capsys, c.lab, "edit", card.card_id, "--version", "1", "--set", "status=refuted")
    assert code == 4 and out == "" and err.startswith(f"error: card {card.card_id} changed since you opened it (now revision 2 "
                                                      "by bob")
    assert get_card(c.lab, card.card_id).status == "supported"

    code, out, _ = run(capsys, c.lab, "show", card.card_id)
    assert code == 0 and "revision 2" in out and "live: live" in out and f"feature {c.feature2} of run {c.run_id}" in out
    code, out, _ = run(capsys, c.lab, "show", card.card_id, "--revision", "1", "--json")
    assert json.loads(out) == get_card(c.lab, card.card_id, 1).to_dict()
    code, out, _ = run(capsys, c.lab, "show", card.card_id, "--markdown")
    assert code == 0 and out.startswith("# ") and "## History" in out
    code, out, _ = run(capsys, c.lab, "history", card.card_id)
    assert code == 0 and out.count("revision ") == 2 and "changed: status, tags, notes, features" in out

    code, out, _ = run(capsys, c.lab, "delete", card.card_id, "--version", "2")
    assert code == 0 and get_card(c.lab, card.card_id).deleted
    assert run(capsys, c.lab, "list")[1].startswith("no cards yet")
    code, out, _ = run(capsys, c.lab, "restore", card.card_id)
    assert code == 0 and not get_card(c.lab, card.card_id).deleted
    code, out, _ = run(capsys, c.lab, "delete", card.card_id, "--purge")
    assert code == 0 and "purged" in out and search_cards(c.lab, include_deleted=True) == []


def test_export_and_import_from_the_command_line(cards_lab, capsys, tmp_path):
    c = cards_lab
    assert run(capsys, c.lab, "new", "--run", c.run_id, "--feature", str(c.feature), "--title", "t1")[0] == 0
    assert run(capsys, c.lab, "new", "--run", c.run_id, "--feature", str(c.feature2), "--example", "e1",
               "--example", "e2")[0] == 0
    code, out, _ = run(capsys, c.lab, "export", "--format", "json", "--out", str(tmp_path / "cards.json"))
    assert code == 0 and "2 cards written" in out
    code, out, _ = run(capsys, c.lab, "export", "--format", "md", "--out", str(tmp_path / "md"))
    assert code == 0 and len(list((tmp_path / "md").glob("card-*.md"))) == 2
    code, out, _ = run(capsys, c.lab, "export", "--format", "registry", "--run", c.run_id, "--out", "-")
    reg = json.loads(out)
    assert set(reg) == {str(c.feature), str(c.feature2)} and reg[str(c.feature2)]["examples"] == ["e1", "e2"]
    (tmp_path / "reg.json").write_text(out)

    from core.lab import Lab

    other = Lab.at(tmp_path / "other")
    code, out, _ = run(capsys, other, "import", str(tmp_path / "cards.json"))
    assert code == 0 and out.strip() == "2 cards created, 0 updated, 0 unchanged, 2 evidence snapshots added"
    code, out, _ = run(capsys, other, "import", str(tmp_path / "cards.json"))
    assert out.strip().startswith("0 cards created, 0 updated, 2 unchanged")
    assert len(search_cards(other)) == 2

    code, out, _ = run(capsys, c.lab, "import", str(tmp_path / "reg.json"), "--registry", "--run", c.run_id)
    assert code == 0 and out.strip() == "0 cards created, 2 entries skipped (already on a card)"
    code, _, err = run(capsys, c.lab, "import", str(tmp_path / "reg.json"))
    assert code == 2 and "not a findings export" in err and "--registry" in err
    (tmp_path / "broken.json").write_text("{not json")
    code, _, err = run(capsys, c.lab, "import", str(tmp_path / "broken.json"))
    assert code == 2 and "is not JSON" in err
    code, _, err = run(capsys, c.lab, "edit", "card-00000000", "--version", "1", "--set", "colour=red")
    assert code == 2 and "'colour' is not a field you can set" in err
    code, _, err = run(capsys, c.lab, "new", "--run", "nope", "--feature", "1")
    assert code == 2 and err.startswith("error: unknown run 'nope'")
