"""Corpus files that cannot give text are refused at once, in one line naming the file.

A binary file was once skipped (so a domain of them was "empty"), and a big file of one repeated
character was split and tokenized for minutes before being reported as 0 tokens. The checks look at
the text (NUL bytes, UTF-8, one repeated character) and at the first batch of tokenized documents,
so small files show the behaviour of big ones.
"""

from __future__ import annotations

import re

import pytest
import torch

import db
from core.errors import LabError
from core.lab import Lab
from engine.cli import main
from engine.collection.collect import build_sequences
from engine.collection.corpora import _DOC_CHARS, _split, file_docs
from engine.collection.models import load_model, resolve_model
from engine.config import DataConfig, DomainSpec
from tests.helpers import small_overrides


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("name, content, message", [
    ("nul.txt", b"some text\x00\x01\x02 more", r"file '.*nul.txt' is binary, not text: it holds a NUL byte at offset 9"),
    ("latin1.txt", "café au lait".encode("latin-1"),
     r"file '.*latin1.txt' is binary, not text: byte 0xe9 at offset 3 is not UTF-8"),
    ("image", bytes(range(256)) * 4, r"file '.*image' is binary, not text"),
    ("same.txt", b"a" * 200_000, r"file '.*same.txt' holds only the character 'a' repeated 200,000 times"),
    ("dashes.md", b"\n" + b"-" * 5000 + b"\n", r"holds only the character '-' repeated 5,000 times"),
])
def test_files_without_usable_text_are_refused_by_name(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(LabError) as e:
        list(file_docs(str(tmp_path / name)))
    assert re.search(message, _one_line(e)), str(e.value)


def test_a_binary_file_in_a_folder_is_named_not_skipped(tmp_path):
    (tmp_path / "good.txt").write_text("Plain words of ordinary prose.")
    (tmp_path / "blob").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(64))
    with pytest.raises(LabError, match=r"file '.*blob' is binary, not text"):
        list(file_docs(str(tmp_path)))


def test_text_files_read_as_before(tmp_path):
    (tmp_path / "a.txt").write_bytes("Line one\r\nline two\rline three — ünïcode\n".encode("utf-8"))
    assert list(file_docs(str(tmp_path / "a.txt"))) == ["Line one\nline two\nline three — ünïcode"]


def test_one_huge_paragraph_is_cut_into_documents_that_add_up_to_it():
    text = "word " * 300_000  # 1.5 MB without a paragraph break
    docs = list(_split(text))
    assert "".join(docs) == text
    assert all(len(d) == _DOC_CHARS for d in docs[:-1]) and len(docs[-1]) <= 2 * _DOC_CHARS


def test_text_that_tokenizes_to_nothing_is_refused_after_a_sample(tmp_path):
    """'abab...' is one word too long for the WordPiece vocabulary: every document is [UNK]."""
    loaded = load_model(resolve_model("all-MiniLM-L6-v2"), torch.device("cpu"))
    data = DataConfig(domains=[], tokens_per_domain=2000, seq_len=64)
    noise = DomainSpec("noise", "file:noise")
    docs = ["ab" * 1000] * 5000
    with pytest.raises(LabError) as e:
        build_sequences(loaded, noise, data, 0, docs=iter(docs))
    msg = _one_line(e)
    assert "yields no usable tokens: its first 64 documents" in msg, msg  # judged on the first batch, not all 5000


@pytest.mark.parametrize("content, message", [
    (b"x" * 300_000, r"holds only the character 'x' repeated 300,000 times"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"is binary, not text"),
], ids=["repeated-char", "binary"])
def test_bad_corpus_files_through_the_cli_write_no_runs(tmp_path, capsys, content, message):
    bad = tmp_path / "corpus.txt"
    bad.write_bytes(content)
    lab = Lab.at(tmp_path / "lab")
    db.ensure_schema(lab)
    args = [a for o in small_overrides(tokens=2000, layers="0") for a in ("--set", o)]
    assert main(["--lab", str(lab.root), "-q", "train", "--domains", f"junk={bad},prose", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and re.search(message, err[0]), err
    assert db.query_rows(lab, "SELECT count(*) FROM runs")[0][0] == 0
    assert not lab.runs.exists() or not any(lab.runs.iterdir())
