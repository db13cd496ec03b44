"""Interventions are stored in DuckDB with the edit that produced them, read back by the queries
the inspector calls, exported as findings evidence, and run from the CLI; bad input (Done-when 3)
gets one line naming the fix."""

from __future__ import annotations

import json
import math

import pytest

import db
from core.errors import LabError
from engine.cli import main as cli_main
from engine.interventions import Edit, InterventionOptions, InterventionSpec, intervene, run_intervention
from engine.interventions.queries import intervention_detail, intervention_evidence, interventions_for_feature, list_interventions
from engine.interventions.session import get_session
from tests.engine.interventions.helpers import CAUSAL_TEXT, ENCODER_TEXT, strongest_and_silent

TABLES = ("interventions", "intervention_token_movers", "intervention_generations", "intervention_neighbours",
          "specificity_studies", "specificity_features")


def test_every_intervention_table_and_column_is_commented(lab):
    db.ensure_schema(lab)
    missing = db.query_rows(lab, "SELECT table_name, column_name FROM duckdb_columns() "
                                      "WHERE table_name IN (SELECT unnest(?)) AND coalesce(comment, '') = ''", [list(TABLES)])
    assert missing == []
    tables = dict(db.query_rows(lab, "SELECT table_name, comment FROM duckdb_tables() WHERE table_name IN (SELECT unnest(?))",
                                [list(TABLES)]))
    assert set(tables) == set(TABLES) and all(tables.values())


def test_encoder_intervention_is_stored_with_its_edit_and_read_back(encoder_run):
    fx = encoder_run
    strong, _ = strongest_and_silent(get_session(fx.lab, fx.run_id, "cpu"), ENCODER_TEXT)
    r = intervene(fx.lab, fx.run_id, strong, "scale", 4.0, ENCODER_TEXT, neighbour_corpus=16)
    assert r.stored and r.cosine_shift > 0
    d = intervention_detail(fx.lab, r.intervention_id)
    assert d["edits"] == [{"feature": strong, "op": "scale", "value": 4.0}] and list(d["features"]) == [strong]
    assert InterventionSpec.from_dict(d["spec"]).to_dict() == r.spec  # the spec round-trips: the result can be re-run
    assert d["cosine_shift"] == pytest.approx(r.cosine_shift) and d["kl_mean"] is None
    assert [m["token"] for m in d["token_movers"]["up"]] == [m["token"] for m in r.token_movers["up"]]
    assert len(d["neighbours"]["clean_top"]) == 10 and d["neighbour_overlap"] == pytest.approx(r.neighbours["overlap"])
    assert d["generation"] is None and list(d["tokens"]) == r.tokens
    df = interventions_for_feature(fx.lab, fx.run_id, strong)
    assert r.intervention_id in set(df["intervention_id"])
    assert interventions_for_feature(fx.lab, fx.run_id, strong + 1).empty or r.intervention_id not in set(
        interventions_for_feature(fx.lab, fx.run_id, strong + 1)["intervention_id"])
    ev = intervention_evidence(fx.lab, r.intervention_id)
    assert json.loads(json.dumps(ev)) == ev  # plain JSON: attachable to a findings card
    assert ev == json.loads(json.dumps(r.evidence()))
    assert ev["feature"] == strong and ev["run_id"] == fx.run_id and "cosine shift" in ev["summary"]


def test_causal_intervention_stores_generation_and_delta_ce(causal_run):
    fx = causal_run
    strong, _ = strongest_and_silent(get_session(fx.lab, fx.run_id, "cpu"), CAUSAL_TEXT)
    spec = InterventionSpec(fx.run_id, [Edit(strong, "clamp", 30.0)], text=CAUSAL_TEXT,
                            options=InterventionOptions(generate_tokens=5, ce_sequences=2, sample=True, seed=7))
    r = run_intervention(fx.lab, spec)
    d = intervention_detail(fx.lab, r.intervention_id)
    assert d["model_kind"] == "causal" and d["kl_mean"] == pytest.approx(r.kl_mean) and len(d["kl_per_position"]) == len(r.tokens)
    assert set(d["delta_ce"]) == {"prose", "code"}
    g = d["generation"]
    assert g["sampled"] and g["seed"] == 7 and g["clean_text"] == r.generation.clean_text and len(g["edited_tokens"]) == 5
    assert len(list_interventions(fx.lab, fx.run_id)) >= 1


def test_corpus_sequences_as_input(causal_run):
    fx = causal_run
    s = get_session(fx.lab, fx.run_id, "cpu")
    strong, _ = strongest_and_silent(s, CAUSAL_TEXT)
    spec = InterventionSpec(fx.run_id, [Edit(strong, "scale", 3.0)], domain="prose", sequences=[0, 1],
                            options=InterventionOptions(ce_sequences=0))
    r = run_intervention(fx.lab, spec)
    assert r.input_kind == "corpus" and len(r.per_sequence) == 2 and r.generation is None
    assert r.kl_mean == pytest.approx(sum(r.per_sequence) / 2, rel=0.5)  # position-weighted vs sequence mean


def test_numpy_numbers_from_a_dataframe_are_accepted(causal_run):
    import numpy as np

    fx = causal_run
    r = intervene(fx.lab, fx.run_id, np.int64(3), "scale", np.float32(2.0), CAUSAL_TEXT, store=False, generate_tokens=0,
                  ce_sequences=0)
    assert r.spec["edits"] == [{"feature": 3, "op": "scale", "value": 2.0}]
    assert json.loads(json.dumps(r.evidence()))["feature"] == 3


def test_cli_intervene_prints_the_effects_and_stores_them(encoder_run, capsys):
    fx = encoder_run
    strong, _ = strongest_and_silent(get_session(fx.lab, fx.run_id, "cpu"), ENCODER_TEXT)
    code = cli_main(["--lab", str(fx.lab.root), "-q", "intervene", "--run", fx.run_id, "--feature", str(strong), "--zero",
                     "--text", ENCODER_TEXT])
    out = capsys.readouterr().out
    assert code == 0
    assert f"zero #{strong} on the text: cosine shift" in out and "pushed up" in out and "stored as iv-" in out
    code = cli_main(["--lab", str(fx.lab.root), "-q", "intervene", "--run", fx.run_id, "--feature", str(strong), "--clamp", "3",
                     "--text", ENCODER_TEXT, "--json", "--no-store"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["spec"]["edits"][0]["op"] == "clamp" and not res["stored"]
    assert cli_main(["--lab", str(fx.lab.root), "interventions", "--run", fx.run_id, "--feature", str(strong)]) == 0
    assert "iv-" in capsys.readouterr().out


BAD = [
    (["--run", "no-such-run", "--feature", "1", "--zero", "--text", "x"], "unknown run 'no-such-run'"),
    (["--feature", "512", "--zero", "--text", "x"], "feature 512 does not exist: this run's SAE has features 0 to 511"),
    (["--feature", "-1", "--zero", "--text", "x"], "feature -1 does not exist"),
    (["--feature", "1", "--scale", "nan", "--text", "x"], "the factor is nan: give a finite number"),
    (["--feature", "1", "--clamp", "inf", "--text", "x"], "the clamp value is inf: give a finite number"),
    (["--feature", "1", "--zero", "--text", ""], "empty text"),
    (["--feature", "1", "--zero", "--text", "   \n"], "empty text"),
    (["--feature", "1", "--zero"], "nothing to run the edit on"),
    (["--feature", "1", "--zero", "--text", "word " * 600], "more than the model's context of 512 tokens: shorten it"),
    (["--feature", "1", "--zero", "--domain", "poetry", "--seqs", "0"], "unknown domain 'poetry'"),
    (["--feature", "1", "--zero", "--domain", "prose", "--seqs", "99999"], "sequence 99999 does not exist"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m.split(":")[0][:40] for _, m in BAD])
def test_bad_input_gets_one_line_naming_the_fix(encoder_run, capsys, args, message):
    fx = encoder_run
    args = (["--run", fx.run_id] if "--run" not in args else []) + args
    before = db.query_rows(fx.lab, "SELECT count(*) FROM interventions")[0][0] if _has(fx) else 0
    code = cli_main(["--lab", str(fx.lab.root), "-q", "intervene", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and message in err
    assert (db.query_rows(fx.lab, "SELECT count(*) FROM interventions")[0][0] if _has(fx) else 0) == before  # nothing written


def _has(fx) -> bool:
    return bool(db.query_rows(fx.lab, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'interventions'")[0][0])


def test_bad_input_through_the_api(causal_run):
    fx = causal_run
    with pytest.raises(LabError, match="plus 200 generated, more than the model's context of 256 tokens: shorten it or lower "
                                       "--generate"):
        intervene(fx.lab, fx.run_id, 1, "zero", None, "word " * 100, generate_tokens=200, store=False)
    with pytest.raises(LabError, match="feature 3 is edited twice"):
        run_intervention(fx.lab, InterventionSpec(fx.run_id, [Edit(3, "zero"), Edit(3, "scale", 2.0)], text="a b"), store=False)
    with pytest.raises(LabError, match="a zero edit takes no value"):
        intervene(fx.lab, fx.run_id, 1, "zero", 2.0, "a b", store=False)
    with pytest.raises(LabError, match="a scale edit needs a factor"):
        intervene(fx.lab, fx.run_id, 1, "scale", None, "a b", store=False)
    with pytest.raises(LabError, match="unknown edit 'double'"):
        intervene(fx.lab, fx.run_id, 1, "double", 2.0, "a b", store=False)
    with pytest.raises(LabError, match="the factor is nan"):
        intervene(fx.lab, fx.run_id, 1, "scale", math.nan, "a b", store=False)
    with pytest.raises(LabError, match="65 sequences in one intervention: give at most 64"):
        run_intervention(fx.lab, InterventionSpec(fx.run_id, [Edit(1, "zero")], domain="prose", sequences=list(range(65))))
    with pytest.raises(LabError, match="config key 'InterventionSpec.edits\\[0\\].feature' must be a whole number"):
        InterventionSpec.from_dict({"run_id": fx.run_id, "edits": [{"feature": "x", "op": "zero"}], "text": "a"})
