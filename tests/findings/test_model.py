"""Card validation without a lab: what is refused, with which message, and what is kept verbatim."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import LabError
from findings.model import TEXT_MAX, Card, FeatureRef, check_fields, coerce_refs

HOSTILE = ["<script>alert(1)</script>", "'); DROP TABLE findings; --", "[x](javascript:alert(1))", "# heading", "Robert\"); --"]


@pytest.mark.parametrize("title, message", [
    ("", "title is empty"),
    ("   \t ", "title is empty"),
    ("x" * 201, "title is 201 characters long, over the limit of 200"),
    ("two\nlines", "title contains line breaks"),
    ("bell\x07", r"U\+0007"),
    ("nul\x00", r"U\+0000"),
    ("\ud800 lone surrogate", "not valid Unicode"),
    (42, "title must be text"),
])
def test_bad_titles_are_refused_naming_the_problem(title, message):
    with pytest.raises(LabError, match=message):
        check_fields({"title": title})


def test_a_megabyte_description_is_refused_naming_the_limit():
    with pytest.raises(LabError, match=r"description is 1,048,576 characters long, over the limit of 100,000: shorten it"):
        check_fields({"description": "x" * (1 << 20)})
    assert check_fields({"description": "x" * TEXT_MAX})["description"] == "x" * TEXT_MAX  # the limit itself is fine


@pytest.mark.parametrize("field, value, message", [
    ("confidence", "certain", "confidence 'certain' is not one of low, medium, high"),
    ("status", "approved", "status 'approved' is not one of draft, supported, refuted"),
    ("tags", "one,two", "tags must be a list"),
    ("tags", ["a,b"], "contains a comma"),
    ("tags", [" "], "a tag is empty"),
    ("tags", [f"t{i}" for i in range(40)], "40 tags, over the limit of 32"),
    ("examples", "just text", "examples must be a list"),
    ("features", [], "a card needs at least one feature"),
    ("features", ["no-colon"], "not of the form RUN:FEATURE"),
    ("features", [("run", -1)], "must be a feature index"),
    ("features", [("run", True)], "must be a feature index"),
    ("colour", "red", "'colour' is not a card field you can set"),
])
def test_bad_fields_are_refused(field, value, message):
    with pytest.raises(LabError, match=message):
        check_fields({field: value})


def test_text_is_kept_verbatim_and_tags_are_normalised():
    values = check_fields({"title": HOSTILE[0], "description": "\n".join(HOSTILE) + "\n\ttab  ", "label": HOSTILE[1],
                           "tags": [" syntax ", "Syntax", "code"], "examples": HOSTILE})
    assert values["title"] == HOSTILE[0]
    assert values["description"] == "\n".join(HOSTILE) + "\n\ttab  "
    assert values["tags"] == ["syntax", "code"]  # trimmed; a repeat in another case is the same tag
    assert values["examples"] == HOSTILE


def test_feature_references_come_in_every_shape_the_app_and_cli_hold():
    refs = coerce_refs([("r1", np.int64(3)), "r1:3", {"run_id": "r2", "feature": np.int32(7)}, FeatureRef("r3", 0), "a:b:c:12"])
    assert [(r.run_id, r.feature) for r in refs] == [("r1", 3), ("r2", 7), ("r3", 0), ("a:b:c", 12)]  # r1:3 once
    assert all(type(r.feature) is int for r in refs)
    assert [(r.run_id, r.feature) for r in coerce_refs(("r9", 1))] == [("r9", 1)]  # a single pair


def test_a_card_round_trips_through_its_dict():
    card = Card("card-0123abcd", 2, "t", tags=["a"], features=[FeatureRef("r", 1, 2, "mlp_out", "0" * 32)], deleted_at=None,
                created_at="2026-01-01T00:00:00.000000", updated_at="2026-01-01T00:00:01.000000")
    assert Card.from_dict(card.to_dict()) == card
    with pytest.raises(LabError, match="unknown config key 'card.colour'"):
        Card.from_dict({**card.to_dict(), "colour": 1}, "card")
