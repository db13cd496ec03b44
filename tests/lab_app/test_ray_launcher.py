"""The sweep launcher's ray choice starts a Ray driver process (headless app, a real lab, a real process).

The driver is stopped as soon as it is seen: what it does is the Ray tests' business
(tests/engine/sweeps/test_ray_*.py); here, that the app starts it, once, with the address given.
"""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

import db
from core.lab import Lab
from engine.sweeps import launch
from tests.helpers import REPO
from tests.ray_helpers import stop_group

APP = str(REPO / "lab_app" / "app.py")


def test_the_ray_choice_starts_one_driver_with_the_address(tmp_path, monkeypatch):
    lab = Lab.at(tmp_path / "lab")
    db.ensure_schema(lab)
    monkeypatch.setenv("SAE_LAB_DIR", str(lab.root))
    monkeypatch.setattr(launch, "_SPAWNED", [])
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="sw_backend").options == ["local workers", "ray"]
    at.radio(key="sw_backend").set_value("ray").run()
    try:
        # No address: a Ray runtime on this machine ("local"), whatever cluster the lab's last driver used.
        for address, expected in (("", "local"), (" 10.0.0.5:6379 ", "10.0.0.5:6379")):
            at.text_input(key="sw_ray_address").input(address).run()
            at.button(key="sw_launch").click().run()
            assert not at.exception, [e.value for e in at.exception]
            assert any("jobs queued, a Ray driver started" in s.value for s in at.success), [e.value for e in at.error]
            (driver,) = launch._SPAWNED
            assert driver.args[driver.args.index("ray-driver") + 1:][:2] == ["--address", expected]
            at.button(key="sw_launch").click().run()  # a second launch while it starts: no second driver
            assert len(launch._SPAWNED) == 1
            stop_group(driver.pid, driver)
            driver.wait(timeout=60)
            launch._SPAWNED.clear()
        assert db.query_rows(lab, "SELECT count(*) FROM jobs WHERE status = 'QUEUED'")[0][0] > 0
    finally:
        for p in launch._SPAWNED:
            stop_group(p.pid, p)
            p.wait(timeout=60)
