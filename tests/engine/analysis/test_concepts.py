"""Concept extraction, token alignment and the metrics, each against an independent reference:
Python's own tokenizer and ast for code, sklearn for the metrics and the probe.
"""

from __future__ import annotations

import io
import keyword
import re
import tokenize

import numpy as np
import pytest

from core.errors import LabError
from engine.analysis.concepts.code import code_spans
from engine.analysis.concepts.prose import prose_spans
from engine.analysis.concepts.registry import default_registry, domain_kind


def texts(src: str, spans: dict, name: str) -> list[str]:
    return [src[a:b] for a, b in spans.get(name, [])]


def test_a_one_line_function_gets_every_class_python_gives_it():
    src = "def foo(x): return bar.baz(1)\n"
    spans, decided = code_spans(src)
    assert texts(src, spans, "def-name") == ["foo"]
    assert texts(src, spans, "kw:def") == ["def"]
    assert texts(src, spans, "kw:return") == ["return"]
    assert texts(src, spans, "attribute") == ["baz"]
    assert texts(src, spans, "call") == ["baz"]  # foo( is a definition, not a call
    assert texts(src, spans, "number") == ["1"]
    assert texts(src, spans, "param") == ["x"]
    assert texts(src, spans, "bracket:depth>=1") == ["x", "1"]
    assert "bar" in texts(src, spans, "identifier") and "bar" not in texts(src, spans, "attribute")
    assert {"def-name", "param", "store-name"} <= decided


def test_code_classes_agree_with_pythons_tokenizer_on_a_real_module():
    """Every NAME/NUMBER/STRING/OP token python's tokenize reports lands in exactly the concept
    family its type says, at the same characters."""
    import inspect
    import json.decoder as mod

    src = inspect.getsource(mod)
    spans, decided = code_spans(src)
    assert "param" in decided
    lines = [0]
    for i, ch in enumerate(src):
        if ch == "\n":
            lines.append(i + 1)
    at = {}
    for name, sp in spans.items():
        for a, b in sp:
            at.setdefault((a, b), set()).add(name)
    for t in tokenize.generate_tokens(io.StringIO(src).readline):
        a = lines[t.start[0] - 1] + t.start[1]
        b = lines[t.end[0] - 1] + t.end[1]
        got = at.get((a, b), set())
        if t.type == tokenize.NAME:
            assert (f"kw:{t.string}" in got) == keyword.iskeyword(t.string), (t, got)
            assert ("identifier" in got) != keyword.iskeyword(t.string), (t, got)
        elif t.type == tokenize.NUMBER:
            assert "number" in got
        elif t.type == tokenize.STRING:
            assert got & {"string", "f-string"}, (t, got)


def test_decorators_fstrings_depth_imports_and_operators():
    src = "import os.path as p\n@dec(a=1)\nclass A(B):\n    y = f'{x!r}' + g(h[i + 1]) == 2\n"
    spans, _ = code_spans(src)
    assert texts(src, spans, "decorator") == ["@dec(a=1)"]
    assert texts(src, spans, "class-name") == ["A"]
    assert texts(src, spans, "f-string") == ["f'{x!r}'"]
    assert texts(src, spans, "import-name") == ["os", "path", "p"]
    assert texts(src, spans, "kwarg-name") == ["a"]
    assert texts(src, spans, "store-name") == ["y"]
    assert set(texts(src, spans, "bracket:depth>=2")) == {"i", "+", "1"}
    assert texts(src, spans, "op:compare") == ["=="]
    assert texts(src, spans, "op:arith") == ["+", "+"]
    assert texts(src, spans, "line-start") == ["import", "@", "class", "y"]


def test_code_that_does_not_parse_falls_back_to_tokenize_then_to_nothing():
    chunk = "    return self.x\n  y = 1\n"  # inconsistent dedent: tokenize itself fails
    assert code_spans(chunk) == ({}, set())
    partial = "x = [1,\n"  # tokenize fails at EOF inside a bracket
    assert code_spans(partial)[1] == set()
    no_ast = "x = = 1\n"  # tokenizes, does not parse
    spans, decided = code_spans(no_ast)
    assert "kw:def" in decided and "param" not in decided and "store-name" not in decided
    assert texts(no_ast, spans, "number") == ["1"]


def test_prose_classes():
    src = ("Return the ``foo_bar`` value (see `x` and (nested) text). It's 3.5 or 1,000 \"quoted\" and 'single'.\n\n"
           "Next paragraph, don't split.")
    spans, decided = prose_spans(src)
    assert texts(src, spans, "prose:backticked") == ["foo_bar", "x"]
    assert texts(src, spans, "prose:parenthesised") == ["see `x` and (nested) text"]
    assert texts(src, spans, "prose:number") == ["3.5", "1,000"]
    assert texts(src, spans, "prose:quoted") == ["quoted", "single"]  # not the apostrophes of It's / don't
    assert texts(src, spans, "prose:sentence-start") == ["Return", "It's", "Next"]


def test_shared_code_names_need_both_domains():
    reg = default_registry()
    states = reg.prepare({"code": ["def read_file(path):\n    return open(path)\n"],
                          "prose": ["Use read_file and open; path is plain English. See other_name."]})
    spans, _ = reg.extract("Use read_file and open; path is plain English. See other_name.", "prose", states)
    text = "Use read_file and open; path is plain English. See other_name."
    assert texts(text, spans, "shared:code-name") == ["read_file", "open"]  # path is not code-shaped, other_name not in code


def test_researcher_concepts_from_a_regex_and_a_function():
    reg = default_registry()
    fp = reg.fingerprint()
    reg.add_regex("prose:url", r"https?://\S+", kind="prose")
    reg.add_function("any:q-or-u", lambda t: np.array([c in "qu" for c in t]))
    reg.add_function("code:todo", lambda t: [m.span() for m in re.finditer("todo", t)], kind="code")
    assert reg.fingerprint() != fp
    spans, decided = reg.extract("see http://x.org/a b, queue", "prose", reg.prepare({}))
    assert spans["prose:url"] == [(4, 18)]
    assert spans["any:q-or-u"] == [(22, 24), (25, 26)]  # a boolean mask becomes its runs: "qu", "u" of queue
    assert "code:todo" not in decided  # a code concept never applies to prose
    with pytest.raises(LabError, match="already registered"):
        reg.add_regex("prose:url", "x")
    with pytest.raises(LabError, match="not a valid regular expression"):
        reg.add_regex("bad", "(")
    reg.add_function("boom", lambda t: 1 / 0)
    with pytest.raises(LabError, match="concept 'boom': the function raised ZeroDivisionError"):
        reg.extract("text", "prose", reg.prepare({}))
    reg.remove("boom")
    with pytest.raises(LabError, match="built in"):
        reg.remove("kw:def")


def test_domain_kinds(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    assert domain_kind(f"file:{tmp_path / 'src'}", "mine") == "code"
    assert domain_kind("stdlib:code", "code") == "code"
    assert domain_kind("stdlib:prose", "prose") == "prose"
    assert domain_kind("hf:codeparrot/codeparrot-clean-valid@train#content", "python-code") == "code"
    assert domain_kind("hf:wikitext:wikitext-2-raw-v1@train#text", "wikitext") == "prose"
    assert domain_kind("file:/data/legal", "legal") == "prose"


def test_memberships_follow_character_offsets_through_wordpiece(bundled_tokenizer_dir):
    """Tokens get the class of their characters: split words give every piece the class, and the
    uncased tokenizer's 'none' is still the keyword None."""
    from transformers import AutoTokenizer

    from engine.analysis.concepts.members import memberships
    from engine.analysis.concepts.texts import StoreText

    tok = AutoTokenizer.from_pretrained(bundled_tokenizer_dir)
    src = "def foo(x):\n    return isinstance(x, None)\n"
    enc = tok(src, add_special_tokens=False, return_offsets_mapping=True)
    offs = np.array(enc["offset_mapping"], dtype=np.int32)
    n = len(offs)
    text = StoreText([src], np.zeros(n, np.int32), offs[:, 0], offs[:, 1], 1, np.zeros(0, np.int32))
    reg = default_registry()
    m = memberships(text, "code", reg, reg.prepare({"code": [src]}))
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    col = {c: i for i, c in enumerate(m.names)}

    def tokens_of(name):
        return [p for p, hit in zip(pieces, m.member[:, col[name]]) if hit]

    assert tokens_of("kw:return") == ["return"]
    assert tokens_of("kw:None") == ["none"]
    assert tokens_of("builtin") == tokens_of("call") == ["is", "##ins", "##tance"]
    assert tokens_of("def-name") == ["foo"]
    assert not m.member[:, col["prose:number"]].any() and not m.known[:, col["prose:number"]].any()


# -- metrics against sklearn -------------------------------------------------------------------
def test_auroc_threshold_and_f1_match_sklearn():
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    from engine.analysis.concepts.evaluate import auroc, best_f1_threshold, prf

    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.05
    x = np.where(rng.random(3000) < 0.7, 0.0, rng.gamma(2, 1, 3000)) + y * rng.gamma(3, 1, 3000) * (rng.random(3000) < 0.8)
    x = np.round(x, 1)  # plenty of ties
    assert auroc(x, y) == pytest.approx(roc_auc_score(y, x), abs=1e-12)
    t = best_f1_threshold(x, y)
    p, r, f = prf(x >= t, y)
    assert (p, r, f) == pytest.approx((precision_score(y, x >= t), recall_score(y, x >= t), f1_score(y, x >= t)), abs=1e-12)
    best = max(f1_score(y, x >= v) for v in np.unique(x[x > 0]))
    assert f == pytest.approx(best, abs=1e-12)


def test_the_probe_solves_sklearns_objective():
    from sklearn.linear_model import LogisticRegression

    from engine.analysis.concepts.evaluate import fit_logistic

    rng = np.random.default_rng(1)
    for d in (1, 5, 20):
        X = rng.standard_normal((2000, d))
        y = X[:, 0] + 0.7 * rng.standard_normal(2000) > 1.6
        ref = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000, tol=1e-12).fit(X, y)
        beta = fit_logistic(X, y)
        assert np.abs(beta[:-1] - ref.coef_[0]).max() < 1e-5
        assert abs(beta[-1] - ref.intercept_[0]) < 1e-5


@pytest.mark.parametrize("block", [256, 7, 1])
def test_latent_sums_give_every_latents_auroc_in_any_block_size(block):
    """The one-pass AUROC of all latents (ranks through a sparse product, in blocks of latents) equals
    sklearn's per latent; the positives' firing counts and activation sums are the dense ones; and the
    numbers are the same whatever the block size."""
    import scipy.sparse as sp
    from sklearn.metrics import roc_auc_score

    from engine.analysis.concepts.evaluate import _latent_sums

    rng = np.random.default_rng(2)
    n, F = 800, 30
    dense = np.where(rng.random((n, F)) < 0.15, np.round(rng.gamma(2, 1, (n, F)), 1), 0.0).astype(np.float32)
    y = rng.random((n, 2)) < [0.1, 0.3]
    dense[y[:, 0], 3] += 2.0
    M = sp.csr_matrix(y.astype(float))
    P = y.sum(0)
    rank_pos, fire_pos, act_pos, zero = _latent_sums(sp.csc_matrix(dense), M, block=block)
    U = rank_pos + (P[:, None] - fire_pos) * zero[None, :] - (P * (P + 1) / 2)[:, None]
    ours = U / (P * (n - P))[:, None]
    ref = np.array([[roc_auc_score(y[:, c], dense[:, f]) for f in range(F)] for c in range(2)])
    assert np.abs(ours - ref).max() < 1e-12
    assert np.array_equal(fire_pos, (y.T.astype(float) @ (dense > 0)))
    assert np.allclose(act_pos, y.T.astype(float) @ dense.astype(np.float64), rtol=1e-12)
    whole = _latent_sums(sp.csc_matrix(dense), M, block=F)
    assert all(np.array_equal(x, w) for x, w in zip((rank_pos, fire_pos, act_pos, zero), whole))


def test_label_interval_and_titles():
    from engine.analysis.label_trust import balanced_accuracy_interval, confidence_for, label_title

    # A label right on 5 of 5 firing tokens and wrong on 1 of 10,000 others: reliable.
    ba, low, high = balanced_accuracy_interval(np.array([5, 2]), np.array([5, 100]),
                                               np.array([9999, 9000]), np.array([10000, 10000]))
    assert ba[0] > 0.99 and 0.6 <= low[0] < ba[0] <= high[0] <= 1
    # 2 of 100 firing tokens, 90 % of the rest: at chance, and the interval says so.
    assert ba[1] == pytest.approx(0.46) and low[1] < 0.5
    assert label_title("self", False) == "no reliable label (best guess: self)"
    assert label_title("self", None) == "no reliable label (best guess: self)"
    assert label_title("def", True) == "def"
    assert confidence_for(0.99, 0.95, True, precision=0.9) == "high"
    assert confidence_for(0.99, 0.95, True, precision=0.01) == "medium"  # right where it fires, but fires on 1 in 100
    assert confidence_for(0.99, 0.7, True, precision=0.9) == "medium"
    assert confidence_for(1.0, 0.55, False, precision=1.0) == "low"


def test_quality_warnings_for_a_barely_trained_sae():
    from engine.evaluation.metrics import ReconstructionMetrics
    from engine.evaluation.quality import quality_score

    m = ReconstructionMetrics(n_tokens=1000, mse=0.009, fvu=0.91, r2=0.09, cosine=0.97, l0=16, l1=1.0, dead_frac=0.61,
                              l2_ratio=1.0)
    q = quality_score(m, 16, 10, train_steps=1)
    assert q.details["fit_for_interpretability"] is False
    text = " ".join(q.details["warnings"])
    assert "FVU 0.91" in text and "61% of latents are dead" in text and "only 1 step" in text
    ok = ReconstructionMetrics(n_tokens=1000, mse=0.009, fvu=0.2, r2=0.8, cosine=0.97, l0=16, l1=1.0, dead_frac=0.1, l2_ratio=1.0)
    assert quality_score(ok, 16, 10, train_steps=500).details["warnings"] == []


def test_concept_results_and_the_new_columns_are_commented(lab):
    import db

    db.ensure_schema(lab)
    cols = db.query_rows(lab, "SELECT column_name, coalesce(comment, '') FROM duckdb_columns() "
                              "WHERE table_name = 'concept_results'")
    assert len(cols) >= 25 and all(c for _, c in cols)
    new = db.query_rows(lab, "SELECT table_name, column_name, coalesce(comment, '') FROM duckdb_columns() WHERE "
                             "(table_name = 'features' AND column_name LIKE 'label_%') OR "
                             "(table_name = 'run_metrics' AND column_name IN ('concept_coverage', 'concept_coverage_baseline', "
                             "'probe_k1', 'probe_k1_baseline'))")
    names = {n for _, n, _ in new}
    assert {"label_chance", "label_score_low", "label_score_high", "label_reliable", "probe_k1"} <= names
    assert all(c for *_, c in new)


def test_a_concept_file_registers_concepts_and_bad_ones_fail_in_one_line(tmp_path):
    from engine.analysis.cli import _load_concepts
    from engine.analysis.concepts import REGISTRY

    good = tmp_path / "mine.py"
    good.write_text("from engine.analysis.concepts import register_regex\n"
                    "register_regex('test:dunder', r'__\\w+__', kind='code')\n")
    try:
        _load_concepts(str(good))
        assert "test:dunder" in [c.name for c in REGISTRY.concepts]
        spans, _ = REGISTRY.extract("x.__init__()", "code", REGISTRY.prepare({}))
        assert spans["test:dunder"] == [(2, 10)]
        with pytest.raises(LabError, match="already registered"):
            _load_concepts(str(good))
    finally:
        REGISTRY.remove("test:dunder")
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('oops')\n")
    with pytest.raises(LabError, match=r"concept file '.*bad.py' failed \(RuntimeError: oops\): fix the file"):
        _load_concepts(str(bad))
    with pytest.raises(LabError, match="does not exist"):
        _load_concepts(str(tmp_path / "missing.py"))
