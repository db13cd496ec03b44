"""Every page of the app, headless (streamlit.testing.v1.AppTest), on a real seeded DuckDB lab."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

import db
from tests.helpers import REPO, copy_lab

APP = str(REPO / "lab_app" / "app.py")


@pytest.fixture(scope="module")
def seeded(finished_lab):
    lab, config, outcomes = finished_lab
    return lab, outcomes


def run_page(lab, page: str | None = None, query: dict | None = None, monkeypatch=None) -> AppTest:
    monkeypatch.setenv("SAE_LAB_DIR", str(lab.root))
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if page:
        if page == "views/concept_map.py":  # its url path (map) is not its file name: AppTest resolves it after a run
            at.run()
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = ([m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
             + [s.value for s in at.subheader])
    return "\n".join(str(p) for p in parts)


def test_notebook_home(seeded, monkeypatch):
    lab, outcomes = seeded
    at = run_page(lab, monkeypatch=monkeypatch)
    assert at.title[0].value == "Lab notebook"
    labels = [m.label for m in at.metric]
    assert {"Runs", "FVU", "R²", "transfer ×", "quality /5"} <= set(labels)
    assert any(m.help and "Σ‖x − x̂‖²" in m.help for m in at.metric)  # the formula on hover
    assert "Best configuration so far" in texts(at)
    run_table = at.dataframe[0].value
    assert set(o.run_id for o in outcomes) <= set(run_table["run_id"])
    assert [e for e in at.sidebar.expander if "Launch a sweep" in e.label]


def test_runs_page_table_and_figures(seeded, monkeypatch):
    lab, outcomes = seeded
    at = run_page(lab, "views/runs.py", monkeypatch=monkeypatch)
    assert at.dataframe, "the run table is missing"
    table = at.dataframe[0].value
    assert set(o.run_id for o in outcomes) <= set(table["run_id"]) and {"tags", "notes", "fvu"} <= set(table.columns)
    assert at.segmented_control(key="runs_section").options == ["Over time", "Training curves", "A run's figures",
                                                                "Sweep", "Diff two runs"]
    at.segmented_control(key="runs_section").set_value("A run's figures").run()
    assert len(at.get("vega_lite_chart")) >= 4  # curve, transfer heatmap and bars, freq vs magnitude
    for section in ["Over time", "Training curves", "Sweep", "Diff two runs"]:
        at.segmented_control(key="runs_section").set_value(section).run()
        assert not at.exception, (section, [e.value for e in at.exception])
    assert any("Only differences" == t.label for t in at.toggle)


def test_runs_page_saves_tags_and_notes(seeded, monkeypatch, tmp_path):
    lab = copy_lab(seeded[0].root, tmp_path / "lab")
    from engine.recording import annotate_run

    rid = seeded[1][0].run_id
    annotate_run(lab, rid, tags=["baseline", " layer2 ", ""], notes="<b>kept</b> verbatim")
    rows = db.query_rows(lab, "SELECT tags, notes FROM runs WHERE run_id = ?", [rid])
    assert rows[0] == (["baseline", "layer2"], "<b>kept</b> verbatim")
    at = run_page(lab, "views/runs.py", monkeypatch=monkeypatch)
    table = at.dataframe[0].value
    assert table.set_index("run_id").loc[rid, "tags"] == "baseline, layer2"


def test_concept_map_page(seeded, monkeypatch):
    lab, outcomes = seeded
    at = run_page(lab, "views/concept_map.py", monkeypatch=monkeypatch)
    assert at.get("plotly_chart"), "the map is missing"
    run_id = at.selectbox(key="map_run").value
    live, dead = db.query_rows(lab, "SELECT count(*) FILTER (NOT dead), count(*) FILTER (dead) FROM features WHERE run_id = ?",
                               [run_id])[0]
    assert f"{live} of {live + dead} features shown ({dead} dead, not mapped)" in texts(at)
    assert at.selectbox(key="map_color").options == ["cluster", "class", "selectivity", "|selectivity|", "label score"]
    at.text_input(key="map_search").input("the").run()
    assert not at.exception
    assert "match 'the'" in texts(at)
    at.segmented_control(key="map_dims").set_value("3D").run()
    assert not at.exception and at.get("plotly_chart")


def test_inspector_deep_link_shows_contexts(seeded, monkeypatch):
    lab, outcomes = seeded
    run_id = outcomes[0].run_id
    live = db.query_rows(lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead ORDER BY freq DESC LIMIT 1",
                         [run_id])[0][0]
    at = run_page(lab, "views/inspector.py", query={"run": run_id, "feature": str(live)}, monkeypatch=monkeypatch)
    assert at.number_input(key="insp_feature").value == live
    html = "\n".join(m.value for m in at.markdown)
    assert "Top activating contexts" in html and html.count("<span") > 20  # highlighted tokens
    assert f"Feature {live}" in texts(at)
    assert {"frequency", "max activation", "label detection"} <= {m.label for m in at.metric}


def test_inspector_without_a_link_opens_the_best_labelled_feature(seeded, monkeypatch):
    lab, outcomes = seeded
    run_id = outcomes[0].run_id
    best = db.query_rows(lab, "SELECT feature FROM features WHERE run_id = ? ORDER BY label_score DESC NULLS LAST, feature "
                              "LIMIT 1",
                         [run_id])[0][0]
    at = run_page(lab, "views/inspector.py", query={"run": run_id}, monkeypatch=monkeypatch)
    assert at.number_input(key="insp_feature").value == best


def test_root_deep_link_opens_the_inspector(seeded, monkeypatch):
    lab, outcomes = seeded
    at = run_page(lab, query={"run": outcomes[0].run_id, "feature": "3"}, monkeypatch=monkeypatch)
    assert at.title[0].value == "Feature inspector"


def test_probe_page(seeded, monkeypatch):
    lab, outcomes = seeded
    at = run_page(lab, "views/probe.py", monkeypatch=monkeypatch)
    table = at.dataframe(key="probe_table").value
    assert "import" in set(table["token"]) and table["top feature"].notna().any()
    # The picker opens on the strongest feature over the text (summed activation), not the lowest id.
    totals = next(d.value for d in at.dataframe if "summed" in d.value.columns)
    strongest = int(totals.sort_values("summed", ascending=False).iloc[0]["feature"])
    assert at.selectbox(key="probe_feature").value == strongest


def test_probe_row_selection_shows_that_rows_top_feature(seeded, monkeypatch):
    """Selecting a row of the token table switches the feature picker (and the shading) to that row's top feature."""
    lab, outcomes = seeded
    at = run_page(lab, "views/probe.py", monkeypatch=monkeypatch)
    table = at.dataframe(key="probe_table").value
    first = at.selectbox(key="probe_feature").value
    rows = [i for i, f in enumerate(table["top feature"]) if f == f and int(f) != first]
    assert rows, "every token has the same top feature: the test text cannot tell a row apart"
    for i in rows[:2]:  # two different rows in turn: each click changes the picker
        at.session_state["probe_table"] = {"selection": {"rows": [i], "columns": []}}
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        want = int(table.iloc[i]["top feature"])
        assert at.selectbox(key="probe_feature").value == want, (i, want)
        assert f"**Feature {want} on this text**" in [m.value for m in at.markdown]


def test_sql_page_runs_queries_and_refuses_writes(seeded, monkeypatch):
    lab, outcomes = seeded
    before = db.query_rows(lab, "SELECT count(*) FROM runs")[0][0]
    at = run_page(lab, "views/sql.py", monkeypatch=monkeypatch)
    result = next(d.value for d in at.dataframe if "rating" in d.value.columns)  # the default query ran on first load
    assert {"run_id", "score", "rating"} <= set(result.columns) and len(result) == before
    at.text_area(key="sql_query").set_value("DROP TABLE runs").run()
    at.button(key="sql_run").click().run()
    assert any("not allowed" in e.value for e in at.error)
    at.text_area(key="sql_query").set_value("SELECT * FROM no_such_table").run()
    at.button(key="sql_run").click().run()
    assert any("query failed" in e.value for e in at.error) and not at.exception
    assert db.query_rows(lab, "SELECT count(*) FROM runs")[0][0] == before
    assert any(e.label == "runs" for e in at.expander)  # the schema browser


def test_sql_saved_query_runs_and_charts_its_answer(seeded, monkeypatch):
    lab, outcomes = seeded
    at = run_page(lab, "views/sql.py", monkeypatch=monkeypatch)
    assert not at.get("vega_lite_chart")  # no chart until asked for
    at.selectbox(key="sql_example").set_value("k trade-off: FVU, L0 and dead latents per k").run()
    assert not at.exception, [e.value for e in at.exception]
    result = next(d.value for d in at.dataframe if "saes" in d.value.columns)
    assert {"k", "fvu", "l0"} <= set(result.columns)
    assert at.toggle(key="sql_chart").value and at.get("vega_lite_chart")  # the saved query opens with its chart
    assert at.selectbox(key="sql_chart_x").value == "k" and at.selectbox(key="sql_chart_y").value == "fvu"
    at.selectbox(key="sql_chart_y").set_value("l0").run()
    assert not at.exception and at.get("vega_lite_chart")


@pytest.fixture
def lab_copy(seeded, tmp_path):
    lab = copy_lab(seeded[0].root, tmp_path / "lab")
    return lab, seeded[1]


def live_feature(lab, run_id: str) -> int:
    return db.query_rows(lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead ORDER BY freq DESC LIMIT 1",
                         [run_id])[0][0]


def test_inspector_labels_a_feature_and_runs_an_intervention(lab_copy, monkeypatch):
    from findings import cards_for_feature

    lab, outcomes = lab_copy
    run_id = outcomes[0].run_id
    f = live_feature(lab, run_id)
    at = run_page(lab, "views/inspector.py", query={"run": run_id, "feature": str(f)}, monkeypatch=monkeypatch)
    title = next(t for t in at.text_input if t.label == "Title")
    assert title.value  # prefilled with the auto-label
    title.set_value("My <b>label</b> & [link](javascript:x)")
    next(b for b in at.button if b.label == "Save card").click().run()
    assert not at.exception and any("Saved card" in s.value for s in at.success)
    (card,) = cards_for_feature(lab, run_id, f)
    assert card.title == "My <b>label</b> & [link](javascript:x)"  # stored verbatim
    next(b for b in at.button if b.label == "Run intervention").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert {"embedding shift", "edited positions"} <= {m.label for m in at.metric}
    next(b for b in at.button if b.label == "Attach").click().run()
    assert any("Attached" in s.value for s in at.success)
    from findings import get_card

    assert [e.kind for e in get_card(lab, card.card_id).evidence] == ["intervention"]


def test_findings_page_shows_cards_and_refuses_a_stale_save(lab_copy, monkeypatch):
    from findings import card_from_feature, get_card

    lab, outcomes = lab_copy
    run_id = outcomes[0].run_id
    card = card_from_feature(lab, run_id, live_feature(lab, run_id), author="a", notes="<script>alert(1)</script>")
    tab_a = run_page(lab, "views/findings.py", query={"card": card.card_id}, monkeypatch=monkeypatch)
    tab_b = run_page(lab, "views/findings.py", query={"card": card.card_id}, monkeypatch=monkeypatch)
    md = "\n".join(m.value for m in tab_a.markdown)
    assert "&lt;script&gt;" in md or "\\<script" in md or "<script>" not in md.replace("&lt;", "")
    for at, claim in ((tab_a, "first tab's claim"), (tab_b, "second tab's claim")):
        next(t for t in at.text_area if t.label == "Claim").set_value(claim)
        next(b for b in at.button if b.label == "Save").click().run()
    assert not tab_b.exception
    assert any("changed since you opened it" in e.value for e in tab_b.error)
    now = get_card(lab, card.card_id)
    assert now.claim == "first tab's claim" and now.revision == 2  # nothing silently overwritten
    assert tab_a.dataframe and any("revision" in d.value.columns for d in tab_a.dataframe)


def test_empty_lab_is_explained_not_crashed(tmp_path, monkeypatch):
    from core.lab import Lab

    lab = Lab.at(tmp_path / "empty")
    for page in (None, "views/runs.py", "views/concept_map.py", "views/inspector.py", "views/sql.py"):
        at = run_page(lab, page, monkeypatch=monkeypatch)
        assert at.info or at.caption


def test_live_panel_shows_running_and_queued_jobs(lab_copy, monkeypatch):
    """A job just claimed (no step yet), one mid-training, and one queued: the panel shows all three."""
    from engine.sweeps.queue import enqueue_sweep
    from engine.sweeps.spec import SweepSpec

    lab, _ = lab_copy
    enqueue_sweep(lab, SweepSpec.from_dict({"name": "live", "parameters": {"k": [4]}, "base": {"sae": {"d_sae": 64}}}))
    ids = [r[0] for r in db.query_rows(lab, "SELECT job_id FROM jobs ORDER BY seq")]
    with db.transaction(lab) as con:
        con.execute("INSERT INTO workers VALUES ('w-test', 'elsewhere', 1, NULL, now()::TIMESTAMP, now()::TIMESTAMP, NULL, NULL)")
        con.execute("UPDATE jobs SET status = 'RUNNING', worker_id = 'w-test', phase = 'collect' WHERE job_id = ?", [ids[0]])
        con.execute("UPDATE jobs SET status = 'RUNNING', worker_id = 'w-test', phase = 'train', step = 40, total_steps = 100, "
                    "loss = 0.5, fvu = 0.3, dead_frac = 0.01, eta_seconds = 65 WHERE job_id = ?", [ids[1]])
    at = run_page(lab, monkeypatch=monkeypatch)
    side = "\n".join(c.value for c in at.sidebar.caption)
    assert "2 running" in side and "FVU 0.300" in side
    progress = sorted(p.proto.value for p in at.get("progress"))
    assert progress == [0, 40]  # percent: the just-claimed job at 0, the training one at step 40 of 100
    assert any(b.label == "Cancel" for b in at.sidebar.button)


def test_findings_history_opens_on_the_newest_revision_with_a_field_diff(lab_copy, monkeypatch):
    from findings import card_from_feature, update_card

    lab, outcomes = lab_copy
    run_id = outcomes[0].run_id
    card = card_from_feature(lab, run_id, live_feature(lab, run_id), author="a", claim="first claim")
    update_card(lab, card.card_id, card.revision, author="b", claim="second <b>claim</b>", status="supported")
    at = run_page(lab, "views/findings.py", query={"card": card.card_id}, monkeypatch=monkeypatch)
    assert at.selectbox(key="fd_rev").value == 2  # the newest, not the oldest
    assert at.selectbox(key="fd_rev_against").value == 1
    diff = next(d.value for d in at.dataframe if "field" in d.value.columns)
    rows = diff.set_index("field")
    assert {"claim", "status"} <= set(rows.index) and "title" not in rows.index  # only what changed
    assert rows.loc["claim", "before"] == "first claim" and rows.loc["claim", "after"] == "second <b>claim</b>"
    assert rows.loc["status", "after"] == "supported"


def test_a_run_link_opens_its_figures(seeded, monkeypatch):
    """The sidebar links a finished job to /runs?run=…: the page opens on that run's figures."""
    lab, outcomes = seeded
    rid = outcomes[-1].run_id
    at = run_page(lab, "views/runs.py", query={"run": rid}, monkeypatch=monkeypatch)
    assert at.segmented_control(key="runs_section").value == "A run's figures"
    assert at.selectbox(key="fig_run").value == rid


def test_launcher_warns_about_a_one_step_budget(seeded, monkeypatch):
    from lab_app.sidebar import MIN_STEPS, training_steps

    assert training_steps(4000, 1.0) < MIN_STEPS <= training_steps(100_000, 6.0)
    lab, _ = seeded
    monkeypatch.setenv("SAE_LAB_DIR", str(lab.root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["sw_tokens"] = 4000
    at.session_state["sw_epochs"] = 1.0
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("step(s) (< 100)" in w.value for w in at.sidebar.warning)


def test_concept_map_side_panel_and_cluster_filter(seeded, monkeypatch):
    """The picked feature's label and top contexts show beside the map; a cluster row filters the map to that cluster."""
    lab, outcomes = seeded
    at = run_page(lab, "views/concept_map.py", monkeypatch=monkeypatch)
    feature = at.number_input(key="map_feature").value
    md = "\n".join(m.value for m in at.markdown)
    assert f"**Feature {feature}**" in md and "<code>" in md  # the side panel, with contexts and their activations
    assert any(f"feature {feature}" in str(p.proto.label).lower() for p in at.get("page_link"))  # the inspector link
    clusters = next(d.value for d in at.dataframe if "top_tokens" in d.value.columns)
    at.session_state["map_clusters"] = {"selection": {"rows": [1], "columns": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    wanted = int(clusters.iloc[1]["cluster"])
    assert f"Showing cluster {wanted} only" in texts(at)
    live_in_cluster = db.query_rows(lab, "SELECT count(*) FROM features WHERE run_id = ? AND cluster = ? AND NOT dead",
                                    [at.selectbox(key="map_run").value, wanted])[0][0]
    assert f"{live_in_cluster} of " in texts(at)  # the map now draws that cluster's features only
