"""The sidebar's "Import an SAE" (issue 16), headless (AppTest) on a copy of the shared lab.

The SAE is a SAELens folder (the lab's export of its own run: SAELens's layout, TransformerLens hook
name). The preview shows what was recognised and writes nothing; Import runs ``python -m engine
import`` in its own process, and the panel reports the new run when it ends; a wrong folder is one
line in the panel; previewing the same weights again says they are already imported.
"""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

import db
from tests.helpers import REPO, copy_lab

APP = str(REPO / "lab_app" / "app.py")


@pytest.fixture(scope="module")
def setup(finished_lab, tmp_path_factory):
    from engine.imports.export import export_run

    base = tmp_path_factory.mktemp("import_panel")
    lab = copy_lab(finished_lab[0].root, base / "lab")
    db.ensure_schema(lab)
    folder = export_run(lab, finished_lab[2][0].run_id, "saelens", base / "their_sae")
    return lab, folder


def app(lab, monkeypatch) -> AppTest:
    monkeypatch.setenv("SAE_LAB_DIR", str(lab.root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def preview(at: AppTest, path: str) -> AppTest:
    at.text_input(key="imp_path").set_value(path)
    at.button(key="imp_preview").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def counts(lab) -> tuple:
    return db.query_rows(lab, "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM run_imports), "
                              "(SELECT count(*) FROM eval_results)")[0]


def test_preview_then_import_from_the_sidebar(setup, monkeypatch):
    lab, folder = setup
    before = counts(lab)
    at = preview(app(lab, monkeypatch), str(folder))
    table = at.sidebar.dataframe[0].value
    shown = dict(zip(table.iloc[:, 0], table.iloc[:, 1]))
    assert shown == {"format": "saelens", "architecture": "topk", "d_in": "384", "d_sae": "512", "hook": "mlp_out",
                     "layer": "2", "k": "8"}
    assert counts(lab) == before  # a preview writes nothing

    at.button(key="imp_go").click().run()
    assert any("Importing" in c.value for c in at.sidebar.caption)  # the panel says it is running
    at.session_state["imp_job"].proc.wait(timeout=300)  # the import's own process (not a rerun every second meanwhile)
    deadline = time.monotonic() + 60
    while not at.sidebar.success and time.monotonic() < deadline:  # the panel notices on its next run
        assert not at.sidebar.error, [e.value for e in at.sidebar.error]
        at.run()
    assert at.sidebar.success, [e.value for e in at.sidebar.error]
    (rid,) = db.query_rows(lab, "SELECT run_id FROM run_imports")[0]
    assert rid.replace("-", "") in at.sidebar.success[0].value.replace("\\", "").replace("-", "")
    status, tags = db.query_rows(lab, "SELECT status, tags FROM runs WHERE run_id = ?", [rid])[0]
    assert status == "FINISHED" and "imported" in tags
    assert db.query_rows(lab, "SELECT count(*) FROM features WHERE run_id = ?", [rid])[0][0] == 512  # analysed
    assert counts(lab)[0] == before[0] + 1

    # The same weights again: the preview names the run, and there is nothing to import.
    at = preview(app(lab, monkeypatch), str(folder))
    assert any(rid in i.value for i in at.sidebar.info)
    assert not [b for b in at.sidebar.button if b.key == "imp_go"]

    # The notebook says where the newest run came from, and does not rank it among the lab's configurations.
    home = app(lab, monkeypatch)
    caption = next(c.value for c in home.caption if rid in c.value)
    assert "imported from saelens (metrics read on" in caption and "trained on" not in caption, caption
    table = home.dataframe[0].value
    assert table.loc[table["run_id"] == rid, "trained_on"].tolist() == ["imported (saelens)"]
    best = next(m.value for m in home.markdown if "SAE(s):" in m.value)
    assert "1 SAE(s)" not in best and "2 SAE(s): code+prose" in best, best

    # Its figures on the Runs page say where it came from instead of training details.
    at.query_params["run"] = rid
    at.switch_page("views/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="fig_run").value == rid
    assert any("**Imported** from a saelens folder" in m.value for m in at.markdown)
    assert any("no training curves" in c.value for c in at.caption)


def test_a_folder_without_an_sae_is_one_line_in_the_panel(setup, monkeypatch, tmp_path):
    lab, _ = setup
    before = counts(lab)
    at = preview(app(lab, monkeypatch), str(tmp_path))
    (err,) = at.sidebar.error
    assert "holds no SAE weights" in err.value and "\n" not in err.value.strip()
    assert not [b for b in at.sidebar.button if b.key == "imp_go"]
    assert counts(lab) == before
