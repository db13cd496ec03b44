"""The run view names its dead-latent figures and says which matmul dtype trained the SAE; the
launcher offers every registered architecture."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.helpers import REPO

APP = str(REPO / "lab_app" / "app.py")


def test_run_view_names_dead_figures_and_the_matmul_dtype(finished_lab, monkeypatch):
    lab, _, outcomes = finished_lab
    monkeypatch.setenv("SAE_LAB_DIR", str(lab.root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/runs.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert {"dead_frac_train", "dead_frac"} <= set(table.columns)
    at.segmented_control(key="runs_section").set_value("A run's figures").run()
    assert not at.exception, [e.value for e in at.exception]
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "on the training split" in text and "on the held-out tokens" in text
    assert "**Matmul dtype**: float32" in text or "**Matmul dtype**: bfloat16" in text
    assert "exactly k = " in text  # the default architecture's k, as its registry entry reads it


def test_launcher_offers_every_registered_architecture(finished_lab, monkeypatch):
    from engine.training import architectures

    lab = finished_lab[0]
    monkeypatch.setenv("SAE_LAB_DIR", str(lab.root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["sw_preset"] = "custom grid"  # (AppTest loses the sidebar on a rerun of this app)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="sw_arch").options == architectures.names()
    assert "architectures" in at.sidebar.selectbox(key="sw_preset").options
