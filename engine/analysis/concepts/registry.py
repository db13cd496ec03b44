"""The concepts the lab knows, and how a researcher adds their own.

A concept is a named class of characters of a text, decided per document. Built in: the Python
classes of ``code`` (tokenize and ast), the punctuation classes of ``prose``, and one concept
shared by both domains (``shared:code-name``). Add your own before the analysis runs::

    from engine.analysis.concepts import register_regex, register_function

    register_regex("prose:url", r"https?://\\S+", kind="prose")
    register_regex("code:dunder", r"__\\w+__", kind="code")
    register_function("prose:all-caps", lambda text: [m.span() for m in re.finditer(r"\\b[A-Z]{2,}\\b", text)])

A function takes a document's text and returns either a boolean mask with one entry per
character or a list of (start, end) character spans. ``kind`` says which domains the concept
is evaluated on: ``code`` (Python source domains), ``prose`` (the others) or ``any``. The
registry's fingerprint (names, patterns, function sources) keys the cached memberships, so
changing a concept recomputes them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.errors import LabError
from engine.analysis.concepts.code import BUILTIN_NAMES, CODE_CONCEPTS, code_names, code_spans
from engine.analysis.concepts.prose import PROSE_CONCEPTS, prose_spans, prose_words, word_spans

CONCEPTS_VERSION = 1  # bump when a built-in concept's definition changes: cached memberships are keyed by it
KINDS = ("code", "prose", "any")

Spans = list[tuple[int, int]]
State = Any
ExtractFn = Callable[[str, str, State], tuple[dict[str, Spans], set[str]]]


@dataclass(frozen=True)
class Concept:
    name: str
    kind: str  # code | prose | any: the domains it is evaluated on
    description: str
    origin: str  # builtin | regex | function


@dataclass
class _Extractor:
    kind: str
    names: dict[str, str]  # name -> description
    fn: ExtractFn
    origin: str
    key: str  # what the fingerprint records of its behaviour
    prepare: Callable[[dict[str, list[str]]], State] | None = None


def code_shaped(name: str) -> bool:
    """A name a reader takes for code even in prose: snake_case, camelCase, with a digit, a builtin, self/cls."""
    if len(name) < 2:
        return False
    return ("_" in name.strip("_") or any(c.isdigit() for c in name) or re.search(r"[a-z][A-Z]", name) is not None
            or name in BUILTIN_NAMES or name in ("self", "cls"))


def _shared_names(docs_by_kind: dict[str, list[str]]) -> frozenset[str]:
    """Code-shaped names that occur as identifiers in the code documents *and* as words in the prose
    ones; with only one kind of domain, that kind's code-shaped names."""
    code: set[str] = set()
    for text in docs_by_kind.get("code", []):
        code |= code_names(text)
    prose: set[str] = set()
    for text in docs_by_kind.get("prose", []):
        prose |= prose_words(text)
    if docs_by_kind.get("code") and docs_by_kind.get("prose"):
        names = code & prose
    else:
        names = code | prose
    return frozenset(n for n in names if code_shaped(n))


def _shared_fn(text: str, kind: str, names: frozenset[str]) -> tuple[dict[str, Spans], set[str]]:
    return {"shared:code-name": word_spans(text, names)}, {"shared:code-name"}


def _as_spans(result: Any, n: int, name: str) -> Spans:
    """A function's result (a boolean mask or (start, end) spans) as spans."""
    if isinstance(result, np.ndarray) and result.dtype == bool:
        if result.shape != (n,):
            raise LabError(f"concept '{name}' returned a mask of shape {result.shape} for a text of {n} characters: "
                           "return one boolean per character, or (start, end) spans")
        edges = np.flatnonzero(np.diff(np.concatenate([[0], result.astype(np.int8), [0]])))
        return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
    try:
        spans = [(int(a), int(b)) for a, b in result]
    except (TypeError, ValueError):
        raise LabError(f"concept '{name}' returned {type(result).__name__}: "
                       "return a boolean mask or a list of (start, end) spans") from None
    return spans


class ConceptRegistry:
    """Concept definitions, in table order, and the extraction of their spans from one document."""

    def __init__(self) -> None:
        self._extractors: list[_Extractor] = []

    def _add(self, ex: _Extractor) -> None:
        if ex.kind not in KINDS:
            raise LabError(f"concept kind '{ex.kind}' is unknown: use code, prose or any")
        taken = {n for e in self._extractors for n in e.names}
        for name in ex.names:
            if not name or not isinstance(name, str):
                raise LabError("a concept needs a non-empty name")
            if name in taken:
                raise LabError(f"concept '{name}' is already registered: pick another name (or unregister it first)")
        self._extractors.append(ex)

    def add_builtin(self, kind: str, names: dict[str, str], fn: ExtractFn, key: str,
                    prepare: Callable[[dict[str, list[str]]], State] | None = None) -> None:
        self._add(_Extractor(kind, dict(names), fn, "builtin", key, prepare))

    def add_regex(self, name: str, pattern: str, kind: str = "any", description: str = "", flags: int = 0) -> None:
        """A concept marking every match of ``pattern`` (the first group that matched, if it has groups)."""
        try:
            rx = re.compile(pattern, flags)
        except re.error as e:
            raise LabError(f"concept '{name}': the pattern {pattern!r} is not a valid regular expression ({e}): "
                           "fix the pattern") from None

        def fn(text: str, _kind: str, _state: State) -> tuple[dict[str, Spans], set[str]]:
            spans = []
            for m in rx.finditer(text):
                g = next((i for i in range(1, rx.groups + 1) if m.group(i) is not None), 0)
                spans.append(m.span(g))
            return {name: spans}, {name}

        self._add(_Extractor(kind, {name: description or f"matches /{pattern}/"}, fn, "regex", f"{pattern}\x00{flags}"))

    def add_function(self, name: str, func: Callable[[str], Any], kind: str = "any", description: str = "") -> None:
        """A concept computed by ``func(text)`` -> boolean char mask or list of (start, end) spans."""
        if not callable(func):
            raise LabError(f"concept '{name}': {func!r} is not a function of the text")
        try:
            source = inspect.getsource(func)
        except (OSError, TypeError):
            source = ""
        key = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}\x00{source}"

        def fn(text: str, _kind: str, _state: State) -> tuple[dict[str, Spans], set[str]]:
            try:
                result = func(text)
            except Exception as e:
                raise LabError(f"concept '{name}': the function raised {type(e).__name__} ({e}): fix the function") from None
            return {name: _as_spans(result, len(text), name)}, {name}

        described = description or f"computed by {getattr(func, '__qualname__', 'a function')}"
        self._add(_Extractor(kind, {name: described}, fn, "function", key))

    def remove(self, name: str) -> None:
        """Drop a concept added with add_regex / add_function."""
        for ex in list(self._extractors):
            if name in ex.names:
                if ex.origin == "builtin":
                    raise LabError(f"concept '{name}' is built in and cannot be removed")
                self._extractors.remove(ex)
                return
        raise LabError(f"no concept named '{name}' is registered")

    @property
    def concepts(self) -> list[Concept]:
        return [Concept(n, ex.kind, d, ex.origin) for ex in self._extractors for n, d in ex.names.items()]

    def fingerprint(self) -> str:
        material = [CONCEPTS_VERSION] + [[ex.origin, ex.kind, sorted(ex.names), ex.key] for ex in self._extractors]
        return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:12]

    def prepare(self, docs_by_kind: dict[str, list[str]]) -> list[State]:
        """Corpus-level state of each extractor (the shared-name set), from every domain's documents."""
        return [ex.prepare(docs_by_kind) if ex.prepare else None for ex in self._extractors]

    def extract(self, text: str, kind: str, states: list[State]) -> tuple[dict[str, Spans], set[str]]:
        """Spans of every concept that applies to a document of this kind, and the names it decides."""
        spans: dict[str, Spans] = {}
        decided: set[str] = set()
        for ex, state in zip(self._extractors, states):
            if ex.kind != "any" and ex.kind != kind:
                continue
            s, d = ex.fn(text, kind, state)
            spans.update(s)
            decided |= d
        return spans, decided


def default_registry() -> ConceptRegistry:
    reg = ConceptRegistry()
    reg.add_builtin("code", CODE_CONCEPTS, lambda text, _k, _s: code_spans(text), "python-tokenize-ast")
    reg.add_builtin("prose", PROSE_CONCEPTS, lambda text, _k, _s: prose_spans(text), "prose-regex")
    reg.add_builtin("any", {"shared:code-name": "a code-shaped name (snake_case, camelCase, a builtin, self) that occurs "
                                                "both as an identifier in the code domain and as a word in the prose domain"},
                    _shared_fn, "shared-code-names", prepare=_shared_names)
    return reg


REGISTRY = default_registry()


def register_regex(name: str, pattern: str, kind: str = "any", description: str = "", flags: int = 0) -> None:
    """Add a regex concept to the lab's registry (used by every later analysis in this process)."""
    REGISTRY.add_regex(name, pattern, kind, description, flags)


def register_function(name: str, func: Callable[[str], Any], kind: str = "any", description: str = "") -> None:
    """Add a function concept to the lab's registry: ``func(text)`` -> boolean char mask or (start, end) spans."""
    REGISTRY.add_function(name, func, kind, description)


def domain_kind(source: str, name: str = "") -> str:
    """``code`` for Python source domains, ``prose`` for the rest.

    stdlib:code is code; so is a .py file, a local folder of mostly .py files, or a dataset or
    domain whose name says python/code (the seeds' ``python-code``). Everything else is prose."""
    s, n = source.lower(), name.lower()
    if s == "stdlib:code":
        return "code"
    if s == "stdlib:prose":
        return "prose"
    if (s.endswith(".py") or "python" in s or "python" in n
            or re.search(r"(^|[^a-z])code($|[^a-z])", n + " " + s.split(":", 1)[-1])):
        return "code"
    if s.startswith("file:"):
        folder = Path(source[5:]).expanduser()
        if folder.is_dir():
            files = [f for f in folder.rglob("*") if f.is_file()][:2000]
            if files and sum(f.suffix == ".py" for f in files) > len(files) / 2:
                return "code"
    return "prose"
