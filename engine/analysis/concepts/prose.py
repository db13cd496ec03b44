"""Ground-truth classes of prose characters, from the text's own punctuation.

Docstrings carry structure a reader sees at a glance: numbers, quoted and backticked spans
(reStructuredText's ``code``), parenthesised asides, the word that opens a sentence. Each class
is decided by a regular expression or a bracket scan over the original text (original case and
whitespace: what the tokenizer later drops does not matter here, see the package docstring).
Spans cover the *inside* of quotes, backticks and parentheses, not the delimiters: a delimiter
is one fixed token anyone can spot, the inside is what takes context to know.
"""

from __future__ import annotations

import re

Spans = list[tuple[int, int]]

PROSE_CONCEPTS: dict[str, str] = {
    "prose:number": "a number written in digits (3, 2.5, 1,000)",
    "prose:quoted": "text inside double quotes, or single quotes that are not apostrophes",
    "prose:backticked": "text inside `backticks` or ``double backticks`` (code in docstrings)",
    "prose:parenthesised": "text inside (parentheses), nested ones included",
    "prose:sentence-start": "the first word of a sentence (capitalised, at the start or after . ! ?)",
}

_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
_DQUOTE = re.compile(r'"([^"\n]{1,300})"|\u201c([^\u201d\n]{1,300})\u201d')
_SQUOTE = re.compile(r"(?<![\w`])'([^'\n]{1,300})'(?![\w`])")
_BACKTICK = re.compile(r"``([^`]+?)``|(?<!`)`([^`\n]+)`(?!`)")
_SENTENCE = re.compile(r"(?:\A|(?<=[.!?])[ \t\n]+|\n[ \t]*\n)[ \t\n]*([A-Z][A-Za-z'-]*)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _groups(rx: re.Pattern, text: str) -> Spans:
    out = []
    for m in rx.finditer(text):
        for g in range(1, (rx.groups or 0) + 1):
            if m.group(g) is not None:
                out.append(m.span(g))
                break
        else:
            out.append(m.span())
    return out


def parenthesised(text: str) -> Spans:
    """Insides of matched parentheses (an unmatched one marks nothing)."""
    out, stack = [], []
    for i, ch in enumerate(text):
        if ch == "(":
            stack.append(i)
        elif ch == ")" and stack:
            a = stack.pop()
            if not stack and i > a + 1:  # the outermost pair covers every nested one
                out.append((a + 1, i))
    return out


def prose_spans(text: str) -> tuple[dict[str, Spans], set[str]]:
    """(spans of every prose concept, the names decided): regular expressions never fail."""
    spans = {
        "prose:number": _groups(_NUMBER, text),
        "prose:quoted": _groups(_DQUOTE, text) + _groups(_SQUOTE, text),
        "prose:backticked": _groups(_BACKTICK, text),
        "prose:parenthesised": parenthesised(text),
        "prose:sentence-start": _groups(_SENTENCE, text),
    }
    return spans, set(PROSE_CONCEPTS)


def prose_words(text: str) -> set[str]:
    return set(_WORD.findall(text))


def word_spans(text: str, names: frozenset[str] | set[str]) -> Spans:
    """Spans of the words of ``text`` that are in ``names``."""
    return [m.span() for m in _WORD.finditer(text) if m.group() in names]
