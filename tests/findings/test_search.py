"""Finding cards by text, tag, status, run and feature; wildcards typed by a person mean themselves."""

from __future__ import annotations

import pytest

from core.errors import LabError
from findings import cards_for_feature, create_card, delete_card, search_cards, update_card


def ids(cards) -> set[str]:
    return {c.card_id for c in cards}


def test_search_by_text_tag_status_run_and_feature(cards_lab):
    c = cards_lab
    a = create_card(c.lab, "Python def keyword", [(c.run_id, c.feature)], claim="fires on def at the start of a function",
                    tags=["syntax", "Code"], notes="100% on held-out", status="supported")
    b = create_card(c.lab, "Numbers in prose", [(c.run_id, c.feature2)], description="digits_in_text", tags=["numbers"])
    d = create_card(c.lab, "Other run", [(c.other_run, c.feature)], label="def", examples=["x = 1"], status="refuted")
    assert ids(search_cards(c.lab)) == {a.card_id, b.card_id, d.card_id}
    assert ids(search_cards(c.lab, text="DEF")) == {a.card_id, d.card_id}  # title / label, any case
    assert ids(search_cards(c.lab, text="start function")) == {a.card_id}  # every word, anywhere
    assert ids(search_cards(c.lab, text="x = 1")) == {d.card_id}  # examples are searched
    assert ids(search_cards(c.lab, text="numbers")) == {b.card_id}  # tags are searched
    assert ids(search_cards(c.lab, text=a.card_id)) == {a.card_id}
    assert ids(search_cards(c.lab, text="100%")) == {a.card_id}  # % is a character, not a wildcard
    assert ids(search_cards(c.lab, text="%")) == {a.card_id}
    assert ids(search_cards(c.lab, text="digits_in")) == {b.card_id} and ids(search_cards(c.lab, text="s_n")) == set()
    assert ids(search_cards(c.lab, text="'; DROP TABLE findings; --")) == set()
    assert ids(search_cards(c.lab, tag="code")) == {a.card_id}  # tags match whole, any case
    assert ids(search_cards(c.lab, tag="cod")) == set()
    assert ids(search_cards(c.lab, status="refuted")) == {d.card_id}
    assert ids(search_cards(c.lab, run_id=c.run_id)) == {a.card_id, b.card_id}
    assert ids(search_cards(c.lab, feature=c.feature)) == {a.card_id, d.card_id}
    assert ids(search_cards(c.lab, run_id=c.run_id, feature=c.feature, text="def", status="supported",
                            tag="syntax")) == {a.card_id}
    assert ids(cards_for_feature(c.lab, c.run_id, c.feature2)) == {b.card_id}
    assert search_cards(c.lab, limit=1)[0].card_id == d.card_id  # most recently updated first
    with pytest.raises(LabError, match="status 'done' is not one of"):
        search_cards(c.lab, status="done")


def test_search_follows_the_current_revision_and_hides_deleted_cards(cards_lab):
    c = cards_lab
    a = create_card(c.lab, "old words", [(c.run_id, c.feature)])
    update_card(c.lab, a.card_id, 1, title="new words", features=[(c.run_id, c.feature2)])
    assert ids(search_cards(c.lab, text="old")) == set() and ids(search_cards(c.lab, text="new")) == {a.card_id}
    assert ids(cards_for_feature(c.lab, c.run_id, c.feature)) == set()  # no longer about that feature
    assert ids(cards_for_feature(c.lab, c.run_id, c.feature2)) == {a.card_id}
    delete_card(c.lab, a.card_id)
    assert search_cards(c.lab, text="new") == [] and cards_for_feature(c.lab, c.run_id, c.feature2) == []
    assert ids(cards_for_feature(c.lab, c.run_id, c.feature2, include_deleted=True)) == {a.card_id}


def test_a_lab_without_cards_or_database_has_no_cards(lab):
    from findings import CardNotFoundError, delete_card, get_card, purge_card

    assert search_cards(lab) == [] and cards_for_feature(lab, "r", 1) == []
    for call in (lambda: get_card(lab, "card-00000000"), lambda: delete_card(lab, "card-00000000"),
                 lambda: purge_card(lab, "card-00000000"), lambda: update_card(lab, "card-00000000", 1, title="x")):
        with pytest.raises(CardNotFoundError, match="no card 'card-00000000'"):
            call()
    assert not lab.root.exists()  # neither reading nor a failed edit created a lab
