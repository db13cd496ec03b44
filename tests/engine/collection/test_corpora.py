"""The offline default corpora are what they claim to be, and deterministic for a seed."""

from __future__ import annotations

import ast
import io
import itertools
import tokenize

from engine.collection.corpora import clean_docstring, code_docs, prose_docs, strip_code


def take(it, n):
    return list(itertools.islice(it, n))


def test_prose_is_docstrings_without_doctests():
    docs = take(prose_docs(seed=0), 300)
    assert len(docs) == 300
    assert not any(">>>" in d for d in docs)
    assert sum(len(d.split()) for d in docs) > 5000
    assert take(prose_docs(seed=0), 20) == docs[:20]
    assert take(prose_docs(seed=1), 20) != docs[:20]


def test_doctest_examples_and_their_output_are_removed():
    text = "Add two numbers.\n\n    >>> add(1, 2)\n    3\n    >>> add(\n    ...   2, 2)\n    4\n\nReturns the sum."
    assert clean_docstring(text) == "Add two numbers.\n\nReturns the sum."


def test_code_has_no_comments_or_docstrings():
    docs = take(code_docs(seed=0), 300)
    parsed = []
    for d in docs:
        try:
            parsed.append(ast.parse(d))
        except SyntaxError:
            continue  # the rare function cut at a line boundary, or a method outside its class
    assert len(parsed) >= 0.9 * len(docs)
    assert not any("#" in t.string for d in docs for t in _tokens(d) if t.type == tokenize.COMMENT)
    for tree in parsed:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                assert ast.get_docstring(node) is None
    assert any("def " in d for d in docs)


def _tokens(text):
    try:
        return list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []


def test_strip_code_keeps_code_and_drops_docs():
    src = 'def f(x):\n    """Doc."""\n    # comment\n    return x + 1\n'
    assert strip_code(src) == "def f(x):\n    return x + 1"
