"""Escaping: user and model text renders as exactly that text in HTML and in Markdown, and can never
add structure (headings, links, images, raw HTML, table rows, code fences) around it."""

from __future__ import annotations

import html

import pytest
from markdown_it import MarkdownIt

from findings.render import context_html, context_markdown, escape_html, escape_markdown, fenced, markdown_cell

MD = MarkdownIt("commonmark").enable("table")

ONE_LINE = [
    "<script>alert(1)</script>", "'); DROP TABLE findings; --", "[x](javascript:alert(1))", "# heading", "## h2 # x",
    "![img](http://x/y.png)", "<img src=x onerror=alert(1)>", "**bold** _it_ `code` ~~s~~", "a | b | c", "&amp; &lt;",
    "- item", "+ item", "* item", "1. item", "2) item", "> quote", "===", "==", "---", "***", "___", "[ref]: http://evil",
    "<http://auto.link>", "<!-- comment -->", "\\escaped\\", "back`tick``s", "a\\*b", "[^1]", "x <b>y</b> z",
]


def _text_of(rendered: str) -> str:
    """Visible text of a one-paragraph rendering."""
    assert rendered.startswith("<p>") and rendered.endswith("</p>\n"), rendered
    inner = rendered[3:-5]
    assert "<" not in inner.replace("&lt;", ""), inner  # no element at all: everything came out as text
    return html.unescape(inner)


@pytest.mark.parametrize("text", ONE_LINE)
def test_markdown_escaping_renders_exactly_the_text(text):
    assert _text_of(MD.render(escape_markdown(text, one_line=True))) == text


def test_multi_line_text_keeps_its_lines_and_adds_no_blocks():
    text = "# not a heading\n- not a list\n    not code\n```\nnot a fence\n```\n> not a quote\n<div>no html</div>"
    tokens = MD.parse(escape_markdown(text))
    assert {t.type for t in tokens} <= {"paragraph_open", "inline", "paragraph_close"}
    rendered = MD.render(escape_markdown(text))
    plain = html.unescape(rendered.replace("<br />", "").replace("<p>", "").replace("</p>", ""))
    assert plain.strip().replace("\u00a0", " ") == text


def test_table_cells_cannot_add_columns_or_rows():
    doc = "| a | b |\n| --- | --- |\n| " + markdown_cell("x | y\n| z |") + " | ok |\n"
    rendered = MD.render(doc)
    assert rendered.count("<td>") == 2 and rendered.count("<tr>") == 2


def test_a_fence_is_longer_than_any_backticks_inside():
    body = '{"a": "```\\n# not a heading\\n````"}'
    tokens = MD.parse(fenced(body, "json"))
    assert [t.type for t in tokens] == ["fence"] and tokens[0].content.rstrip("\n") == body


def test_html_escaping_and_highlighted_contexts():
    assert escape_html("<script>\"'&") == "&lt;script&gt;&quot;&#x27;&amp;"
    out = context_html(["<b>", "x", "&"], [0.0, 2.0, 1.0], 1)
    assert "<b>" not in out.replace('<span', '') and "&lt;b&gt;" in out and "&amp;" in out
    assert out.count("<span") == 3 and "outline" in out.split("</span>")[1]  # the centre token is outlined


def test_contexts_mark_the_max_activating_token_and_glue_wordpieces():
    md = context_markdown(["the", "em", "##bed", "<", "code"], 1)
    assert md == "the ⟦**em**⟧bed \\< code"
    rendered = MD.render(md)
    assert "<strong>em</strong>" in rendered and "&lt;" in rendered
