"""Text domains as deterministic streams of documents.

Offline defaults come from what every Python install has: ``prose`` is English docstrings from the
standard library with doctest lines removed; ``code`` is standard-library source with docstrings and
comments stripped (``ast.unparse`` drops comments). Both are read in an order fixed by the seed.
Local text files and folders, and Hugging Face datasets where the hub is reachable, also work.
"""

from __future__ import annotations

import ast
import inspect
import random
import re
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Iterator

from core.errors import LabError, first_line
from engine.config import DomainSpec

CORPUS_VERSION = 1  # bump when the text a source yields changes: cached activations are keyed by it
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".json", ".csv", ".html", ".tex", ".c", ".h", ".js", ".ts",
                 ".java", ".go", ".rs", ""}
_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3", "turtledemo"}
_DOC_CHARS = 2000  # documents longer than this are split at paragraph / definition boundaries


def source_fingerprint(domain: DomainSpec) -> str:
    """Extra cache-key material: stdlib text depends on the Python version."""
    if domain.source.startswith("stdlib:"):
        return f"python-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    if domain.source.startswith("file:"):
        p = Path(domain.source[5:]).expanduser()
        files = _text_files(p) if p.exists() else []
        return ";".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files)[:4000]
    return ""


def stdlib_files(seed: int) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        f for f in root.rglob("*.py") if not (_SKIP_PARTS & set(f.relative_to(root).parts))
    )
    random.Random(seed).shuffle(files)
    return files


def _parse(path: Path) -> ast.Module | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return None


_DOCTEST = re.compile(r"^\s*(>>>|\.\.\.)")


def clean_docstring(text: str) -> str:
    """Drop doctest examples (prompt lines and the output lines that follow them) and directives."""
    out, in_example = [], False
    for line in inspect.cleandoc(text).splitlines():
        if _DOCTEST.match(line):
            in_example = True
            continue
        if in_example:
            if line.strip():
                continue  # expected output of the example
            in_example = False
        if line.strip().startswith(".. "):
            continue
        out.append(line.rstrip())
    text = "\n".join(out).strip()
    return re.sub(r"\n{3,}", "\n\n", text)


def _is_prose(text: str) -> bool:
    letters = sum(c.isalpha() for c in text)
    return len(text) >= 40 and letters / max(len(text), 1) > 0.6 and len(text.split()) >= 6


def prose_docs(seed: int) -> Iterator[str]:
    for path in stdlib_files(seed):
        tree = _parse(path)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    text = clean_docstring(doc)
                    if _is_prose(text):
                        yield from _split(text)


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node):
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                 ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _strip


def strip_code(source: str) -> str:
    """Source without docstrings or comments (comments never reach the AST)."""
    tree = ast.parse(source)
    return ast.unparse(_StripDocstrings().visit(tree))


def code_docs(seed: int) -> Iterator[str]:
    for path in stdlib_files(seed):
        tree = _parse(path)
        if tree is None:
            continue
        tree = _StripDocstrings().visit(tree)
        chunk: list[str] = []
        size = 0
        for text in _code_units(tree.body):  # one document per run of top-level units, up to _DOC_CHARS
            if size and size + len(text) > _DOC_CHARS:
                yield "\n".join(chunk)
                chunk, size = [], 0
            if len(text) > _DOC_CHARS * 2:
                yield from _split_lines(text)
                continue
            chunk.append(text)
            size += len(text)
        if chunk:
            yield "\n".join(chunk)


def _code_units(body: list[ast.stmt]) -> Iterator[str]:
    """Unparsed statements; an oversized class is broken into its members so documents stay whole."""
    for stmt in body:
        try:
            text = ast.unparse(stmt)
        except Exception:
            continue
        if len(text) > _DOC_CHARS * 2 and isinstance(stmt, ast.ClassDef):
            yield from _code_units(stmt.body)
        else:
            yield text


def _split_lines(text: str) -> Iterator[str]:
    """Cut a huge block at line boundaries (the rare function longer than two documents)."""
    buf: list[str] = []
    size = 0
    for line in text.splitlines():
        if size and size + len(line) > _DOC_CHARS:
            yield "\n".join(buf)
            buf, size = [], 0
        buf.append(line)
        size += len(line) + 1
    if buf:
        yield "\n".join(buf)


def _split(text: str) -> Iterator[str]:
    if len(text) <= _DOC_CHARS:
        if text.strip():
            yield text
        return
    buf = ""
    for para in re.split(r"\n\s*\n", text):
        if buf and len(buf) + len(para) > _DOC_CHARS:
            yield buf
            buf = ""
        buf = f"{buf}\n\n{para}" if buf else para
        if len(buf) > _DOC_CHARS * 2:
            # Cut _DOC_CHARS pieces until at most two documents' worth is left, by offset: re-slicing
            # the remainder after each cut copied it every time (minutes on one 50 MB paragraph).
            n = (len(buf) - _DOC_CHARS * 2 - 1) // _DOC_CHARS + 1
            for i in range(n):
                yield buf[i * _DOC_CHARS : (i + 1) * _DOC_CHARS]
            buf = buf[n * _DOC_CHARS :]
    if buf.strip():
        yield buf


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        f for f in path.rglob("*")
        if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES and not any(p.startswith(".") for p in f.relative_to(path).parts)
    )


def file_docs(path_text: str) -> Iterator[str]:
    path = Path(path_text).expanduser()
    if not path.exists():
        raise LabError(f"corpus path '{path_text}' does not exist: check the domain's path")
    files = _text_files(path)
    if not files:
        raise LabError(f"corpus folder '{path_text}' holds no text files: add .txt/.md/.py files or pick another folder")
    for f in files:
        yield from _split(read_text_file(f).strip())


def read_text_file(f: Path) -> str:
    """A corpus file's text, refused in one line when it cannot be text worth tokenizing: a binary or
    non-UTF-8 file (once skipped, so a domain of them was reported "empty"), or one character
    repeated (which tokenizes to nothing usable, found out only after minutes of tokenizing)."""
    try:
        raw = f.read_bytes()
    except OSError as e:
        raise LabError(f"cannot read corpus file '{f}' ({e.strerror or e}): check that it is readable") from None
    nul = raw.find(b"\0")
    if nul >= 0:
        raise LabError(f"file '{f}' is binary, not text: it holds a NUL byte at offset {nul}: give the domain text files only")
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # newlines as read_text gives them
    except UnicodeDecodeError as e:
        raise LabError(
            f"file '{f}' is binary, not text: byte 0x{raw[e.start]:02x} at offset {e.start} is not UTF-8: "
            "give the domain UTF-8 text files (convert other encodings, e.g. with iconv)"
        ) from None
    body = text.strip()
    if len(body) > 1 and body.count(body[0]) == len(body):
        raise LabError(
            f"file '{f}' holds only the character {body[0]!r} repeated {len(body):,} times: it has no words to "
            "tokenize; give the domain real text"
        )
    return text


def parse_hf_source(source: str) -> tuple[str, str | None, str, str]:
    """``hf:dataset[:config][@split][#column]`` -> (dataset, config, split, column)."""
    spec = source[3:]
    column = "text"
    split = "train"
    if "#" in spec:
        spec, column = spec.split("#", 1)
    if "@" in spec:
        spec, split = spec.split("@", 1)
    name, _, config = spec.partition(":")
    return name, config or None, split, column


def hf_docs(source: str, seed: int) -> Iterator[str]:
    # deferred: engine.collection.models loads torch, and every config parse imports this module
    from engine.collection.models import hub_reachable

    name, config, split, column = parse_hf_source(source)
    if not hub_reachable():
        raise LabError(
            f"dataset '{name}' needs the Hugging Face Hub, which cannot be reached (offline): "
            "use the offline domains prose/code or a local folder (name=path)"
        )
    try:
        # deferred: datasets is heavy
        import datasets

        ds = datasets.load_dataset(name, config, split=split, streaming=True)
        ds = ds.shuffle(seed=seed, buffer_size=10_000)
    except Exception as e:
        first = first_line(e)
        raise LabError(f"cannot load dataset '{name}' ({first[:160]}): check the dataset name, config and split") from None
    for record in ds:
        text = record.get(column)
        if text is None:
            raise LabError(f"dataset '{name}' has no column '{column}': name the text column with #column")
        text = str(text).strip()
        if text:
            yield from _split(text)


def documents(domain: DomainSpec, seed: int) -> Iterator[str]:
    """The domain's documents in a fixed order for this seed."""
    src = domain.source
    if src == "stdlib:prose":
        return prose_docs(seed)
    if src == "stdlib:code":
        return code_docs(seed)
    if src.startswith("file:"):
        docs = list(file_docs(src[5:]))
        random.Random(seed).shuffle(docs)
        return iter(docs)
    if src.startswith("hf:"):
        return hf_docs(src, seed)
    raise LabError(f"unknown source '{src}' for domain '{domain.name}': use stdlib:prose, stdlib:code, file:<path> or "
                   "hf:<dataset>")
