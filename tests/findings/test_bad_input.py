"""Bad input is refused with a one-line message naming the fix, or stored verbatim and shown
escaped; nothing executes and nothing else in the lab changes."""

from __future__ import annotations

import html
import json
import re

import pytest
from markdown_it import MarkdownIt

import db
from core.errors import LabError
from core.lab import Lab
from findings import (
    card_from_feature,
    create_card,
    escape_html,
    export_json,
    export_markdown,
    get_card,
    import_json,
    search_cards,
    update_card,
)
from tests.findings.helpers import fingerprint

SQL = "'); DROP TABLE findings; --"
HTML = "<script>alert('x')</script><img src=x onerror=alert(1)>"
LINK = "[x](javascript:alert(1)) ![i](http://evil/i.png) <http://evil>"
HEADING = "# heading"
FINDINGS_TABLES = ("findings", "finding_revisions", "finding_features", "finding_evidence", "evidence_snapshots")


def test_bad_input_is_refused_with_a_clear_message_and_changes_nothing(cards_lab):
    c = cards_lab
    card = create_card(c.lab, "existing", [(c.run_id, c.feature)])
    before = fingerprint(c.lab)
    ref = [(c.run_id, c.feature)]
    cases = [
        (lambda: create_card(c.lab, "", ref), "title is empty: give the card a title"),
        (lambda: create_card(c.lab, "  ", ref), "title is empty"),
        (lambda: create_card(c.lab, "t", [("no-such-run", 1)]), "unknown run 'no-such-run': list runs with python -m engine sql"),
        (lambda: create_card(c.lab, "t", [(SQL, 1)]), "unknown run"),
        (lambda: create_card(c.lab, "t", [(c.run_id, c.d_sae)]),
         f"feature {c.d_sae} does not exist: run '{c.run_id}' has features 0 to {c.d_sae - 1}"),
        (lambda: create_card(c.lab, "t", [(c.run_id, -1)]), "must be a feature index"),
        (lambda: create_card(c.lab, "t", []), "a card needs at least one feature"),
        (lambda: create_card(c.lab, "t", ref, description="x" * (1 << 20)),
         "description is 1,048,576 characters long, over the limit of 100,000"),
        (lambda: create_card(c.lab, "t", ref, confidence="sure"), "confidence 'sure' is not one of low, medium, high"),
        (lambda: create_card(c.lab, "t", [{"run_id": c.run_id, "feature": c.feature, "layer": 5}]), "is at layer 2, not 5"),
        (lambda: card_from_feature(c.lab, "no-such-run", 1), "unknown run 'no-such-run'"),
        (lambda: card_from_feature(c.lab, c.run_id, c.feature, title=""), "title is empty"),
        (lambda: card_from_feature(c.lab, c.run_id, c.feature, colour="red"), "'colour' is not a card field you can prefill"),
        (lambda: update_card(c.lab, card.card_id, 1, notes="x" * (1 << 20)), "notes is 1,048,576 characters long"),
        (lambda: update_card(c.lab, card.card_id, 1, title="a\nb"), "title contains line breaks"),
        (lambda: update_card(c.lab, card.card_id, 1, status="done"), "status 'done' is not one of draft, supported, refuted"),
        (lambda: update_card(c.lab, card.card_id, 1, features=[(c.run_id, c.d_sae + 5)]), "does not exist"),
        (lambda: update_card(c.lab, card.card_id, "1", title="x"), "must be a revision number"),
        (lambda: update_card(c.lab, card.card_id, True, title="x"), "must be a revision number"),
        (lambda: update_card(c.lab, card.card_id, None, title="x"), "must name the revision it started from"),
        (lambda: update_card(c.lab, "card-ffffffff", 1, title="x"), "no card 'card-ffffffff' in this lab"),
        (lambda: get_card(c.lab, SQL), "is not a card id"),
        (lambda: create_card(c.lab, "t", ref, author="x" * 101), "author is 101 characters long"),
    ]
    for call, message in cases:
        with pytest.raises(LabError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
            call()
        assert "\n" not in str(e.value)
    assert fingerprint(c.lab) == before


def test_hostile_text_is_stored_verbatim_exported_escaped_and_never_executed(cards_lab, tmp_path):
    c = cards_lab
    others = fingerprint(c.lab, exclude=FINDINGS_TABLES)
    fields = {"claim": f"{SQL}\n{HTML}", "label": HTML,
              "description": f"{HEADING}\n{LINK}\n```\n| a | b |\n---\n1. x\n> q\n    code",
              "notes": f"{SQL}\r\n{HEADING}", "tags": [SQL, "<b>", "[x](y)"], "examples": [HTML, LINK, HEADING]}
    title = f"{HTML} {SQL} {LINK} {HEADING}"
    card = create_card(c.lab, title, [(c.run_id, c.feature)], author=SQL, **fields)
    stored = get_card(c.lab, card.card_id)
    assert stored == card and stored.title == title and stored.author == SQL  # byte-identical
    assert all(getattr(stored, k) == v for k, v in fields.items())
    assert db.query_rows(c.lab, "SELECT title, notes, tags FROM findings WHERE card_id = ?", [card.card_id]) == [
        (title, fields["notes"], fields["tags"])]
    assert fingerprint(c.lab, exclude=FINDINGS_TABLES) == others  # no other table changed (or was dropped)
    assert [x.card_id for x in search_cards(c.lab, text=SQL)] == [card.card_id]
    assert [x.card_id for x in search_cards(c.lab, tag=SQL)] == [card.card_id]

    # shown escaped: HTML for the app
    shown = escape_html(stored.title)
    assert "<script>" not in shown and "&lt;script&gt;" in shown and "onerror=alert(1)&gt;" in shown

    # exported escaped: the Markdown file keeps its structure
    (path,) = export_markdown(c.lab, [card.card_id], tmp_path / "md")
    md = MarkdownIt("commonmark").enable("table")
    text = path.read_text(encoding="utf-8")
    tokens = md.parse(text)
    kinds = {t.type for t in tokens} | {child.type for t in tokens for child in (t.children or [])}
    assert not kinds & {"html_block", "html_inline", "link_open", "image"}
    headings = [(t.tag, tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert [h[0] for h in headings].count("h1") == 1
    assert [h[1] for h in headings if h[0] == "h2"] == ["Claim", "Description", "Notes", "Examples", "Evidence", "History"]
    rendered = md.render(text)
    assert "<script" not in rendered and "<img" not in rendered and "href=" not in rendered and "<h1>" in rendered
    h1 = re.search(r"<h1>(.*)</h1>", rendered).group(1)
    assert html.unescape(h1) == title  # the title reads exactly as typed, as text

    # and round-trips through JSON unchanged
    out = export_json(c.lab, [card.card_id])
    other = Lab.at(tmp_path / "other")
    import_json(other, json.loads(json.dumps(out)))
    assert get_card(other, card.card_id) == stored
