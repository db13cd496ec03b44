"""Ground-truth classes of Python source characters, from Python's own ``tokenize`` and ``ast``.

Every concept here is decided by the language itself, not by a guess: ``tokenize`` names each
token (NAME, NUMBER, STRING, OP ...) and ``keyword``/``builtins`` say which names are keywords or
builtins; a few classes need one token of context (the name after ``def``, after ``.``, before
``(``); a few need the parse tree (function parameters, assignment targets, keyword-argument
names).

Code that does not parse is still labelled as far as the language allows, per document:

* ``ast.parse`` fails (a chunk cut out of a long function): only the tokenize concepts are
  decided; the AST concepts are *unknown* for that document (its tokens are left out of their
  evaluation, never counted as negatives);
* ``tokenize`` fails too (unbalanced brackets, a bad dedent): nothing is decided for it.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import tokenize
from collections import defaultdict

Spans = list[tuple[int, int]]

KEYWORDS = tuple(keyword.kwlist)
BUILTIN_NAMES = frozenset(n for n in dir(builtins) if not n.startswith("_"))

OP_FAMILIES = {
    "op:arith": {"+", "-", "*", "/", "//", "%", "**", "@"},
    "op:compare": {"==", "!=", "<", ">", "<=", ">="},
    "op:assign": {"=", ":=", "+=", "-=", "*=", "/=", "//=", "%=", "**=", "@=", "&=", "|=", "^=", ">>=", "<<="},
    "op:bitwise": {"&", "|", "^", "~", "<<", ">>"},
    "op:bracket": {"(", ")", "[", "]", "{", "}"},
    "op:separator": {",", ":", ";", ".", "->", "..."},
}
_OP_FAMILY = {op: fam for fam, ops in OP_FAMILIES.items() for op in ops}
_OPEN, _CLOSE = set("([{"), set(")]}")

# name -> description; the order is the order of the concept table.
TOKENIZE_CONCEPTS: dict[str, str] = {
    **{f"kw:{k}": f"the keyword {k}" for k in KEYWORDS},
    "identifier": "any name that is not a keyword",
    "builtin": "a name of a Python builtin (len, str, isinstance, ...)",
    "name:self": "the name self",
    "def-name": "the name being defined after def",
    "class-name": "the name being defined after class",
    "attribute": "a name right after '.' (attribute access)",
    "call": "the name called: the name right before '('",
    "import-name": "a name inside an import statement",
    "decorator": "a decorator line: '@' and its expression",
    "number": "a number literal",
    "string": "a string literal (not an f-string)",
    "f-string": "an f-string literal, its braces and fields included",
    **{fam: f"an operator or punctuation of the family {', '.join(sorted(ops))}" for fam, ops in OP_FAMILIES.items()},
    "bracket:depth>=1": "a token inside at least one pair of brackets",
    "bracket:depth>=2": "a token inside at least two nested pairs of brackets",
    "line-start": "the first token of a line (the model never sees the newline itself)",
}
AST_CONCEPTS: dict[str, str] = {
    "param": "a parameter name in a def or lambda signature",
    "store-name": "a name being assigned to (assignment, for or with target)",
    "kwarg-name": "the name of a keyword argument in a call (f(x=1): x)",
}
CODE_CONCEPTS = {**TOKENIZE_CONCEPTS, **AST_CONCEPTS}


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


def _tokens(text: str) -> list[tokenize.TokenInfo] | None:
    """Every token of ``text``, or None when tokenize cannot finish it."""
    try:
        return list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError, ValueError):
        return None


_SKIP = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT, tokenize.ENDMARKER}
_FSTART = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+: f-strings are split into parts
_FEND = getattr(tokenize, "FSTRING_END", None)


def tokenize_spans(text: str) -> dict[str, Spans] | None:
    """Character spans of every tokenize concept in ``text``; None when tokenize fails."""
    toks = _tokens(text)
    if toks is None:
        return None
    starts = _line_starts(text)

    def pos(rc: tuple[int, int]) -> int:
        return starts[rc[0] - 1] + rc[1]

    out: dict[str, Spans] = defaultdict(list)
    toks = [t for t in toks if t.type not in _SKIP or t.type == tokenize.NEWLINE]
    depth = 0
    last_row = 0
    fstring_from: list[int] = []
    in_import = False
    decorator_from: int | None = None
    prev: tokenize.TokenInfo | None = None
    for i, t in enumerate(toks):
        if t.type == tokenize.NEWLINE:
            if decorator_from is not None:
                out["decorator"].append((decorator_from, pos(t.start)))
                decorator_from = None
            in_import = False
            prev = t
            continue
        a, b = pos(t.start), pos(t.end)
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        logical_start = prev is None or prev.type == tokenize.NEWLINE
        if t.start[0] != last_row:
            out["line-start"].append((a, b))
            last_row = t.start[0]
        if _FSTART is not None and t.type == _FSTART:
            fstring_from.append(a)
        elif _FEND is not None and t.type == _FEND and fstring_from:
            out["f-string"].append((fstring_from.pop(), b))
        if t.type == tokenize.OP and t.string in _CLOSE:
            depth = max(depth - 1, 0)
        if depth >= 1:
            out["bracket:depth>=1"].append((a, b))
        if depth >= 2:
            out["bracket:depth>=2"].append((a, b))
        if t.type == tokenize.OP and t.string in _OPEN:
            depth += 1
        if t.type == tokenize.NAME:
            s = t.string
            if keyword.iskeyword(s):
                out[f"kw:{s}"].append((a, b))
                if logical_start and s in ("import", "from"):
                    in_import = True
            else:
                out["identifier"].append((a, b))
                if s in BUILTIN_NAMES:
                    out["builtin"].append((a, b))
                if s == "self":
                    out["name:self"].append((a, b))
                after = prev.string if prev is not None and prev.type in (tokenize.NAME, tokenize.OP) else ""
                if after == "def":
                    out["def-name"].append((a, b))
                elif after == "class":
                    out["class-name"].append((a, b))
                elif nxt is not None and nxt.type == tokenize.OP and nxt.string == "(":
                    out["call"].append((a, b))
                if after == "." and prev.type == tokenize.OP:
                    out["attribute"].append((a, b))
                if in_import:
                    out["import-name"].append((a, b))
        elif t.type == tokenize.NUMBER:
            out["number"].append((a, b))
        elif t.type == tokenize.STRING:
            prefix = t.string[: len(t.string) - len(t.string.lstrip("rRbBuUfF"))]
            out["f-string" if "f" in prefix.lower() else "string"].append((a, b))
        elif t.type == tokenize.OP:
            if t.string == "@" and logical_start:
                decorator_from = a
            else:
                fam = _OP_FAMILY.get(t.string)
                if fam is not None:
                    out[fam].append((a, b))
        prev = t
    return dict(out)


def ast_spans(text: str) -> dict[str, Spans] | None:
    """Character spans of the AST concepts; None when ``text`` does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    starts = _line_starts(text)
    # ast offsets are UTF-8 byte columns: convert per line where a line holds non-ASCII text.
    lines = text.split("\n")

    def pos(line: int, col_bytes: int) -> int:
        s = lines[line - 1]
        col = col_bytes if s.isascii() else len(s.encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))
        return starts[line - 1] + col

    out: dict[str, Spans] = defaultdict(list)

    def add(name: str, node: ast.AST) -> None:
        if getattr(node, "end_lineno", None) is not None:
            out[name].append((pos(node.lineno, node.col_offset), pos(node.end_lineno, node.end_col_offset)))

    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            a = pos(node.lineno, node.col_offset)
            out["param"].append((a, a + len(node.arg)))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            add("store-name", node)
        elif isinstance(node, ast.keyword) and node.arg is not None:
            a = pos(node.lineno, node.col_offset)
            out["kwarg-name"].append((a, a + len(node.arg)))
    return dict(out)


def code_spans(text: str) -> tuple[dict[str, Spans], set[str]]:
    """(spans of every decided concept, the names decided for this text).

    Tokenize concepts are decided when tokenize finishes; AST concepts when the text also parses."""
    tok = tokenize_spans(text)
    if tok is None:
        return {}, set()
    decided = set(TOKENIZE_CONCEPTS)
    spans = dict(tok)
    tree = ast_spans(text)
    if tree is not None:
        spans.update(tree)
        decided |= set(AST_CONCEPTS)
    return spans, decided


def code_names(text: str) -> set[str]:
    """The non-keyword names of a code document (for the shared code-name concept)."""
    toks = _tokens(text) or []
    return {t.string for t in toks if t.type == tokenize.NAME and not keyword.iskeyword(t.string)}
