"""The access gate (lab_app/access.py) on the real app and a real seeded lab, and the launcher's refusal.

The app reads where it is served from Streamlit's own ``server.address`` option, so these tests set
that option (as ``--server.address`` would) and SAE_LAB_TOKEN, then run the real app headless.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from lab_app.access import is_loopback
from tests.helpers import REPO

APP = str(REPO / "lab_app" / "app.py")
PAGE_FILES = sorted(p.relative_to(REPO / "lab_app").as_posix() for p in (REPO / "lab_app" / "views").glob("*.py")
                    if p.name != "__init__.py")
TOKEN = "lab-token-0123456789abcdef"
PROMPT = "This lab needs its access token"


@pytest.fixture
def served(finished_lab, monkeypatch):
    """Set where the app is served and its token, as the launcher would; restores Streamlit's option."""
    monkeypatch.setenv("SAE_LAB_DIR", str(finished_lab[0].root))
    monkeypatch.delenv("SAE_LAB_TOKEN", raising=False)
    before = st_config.get_option("server.address")

    def serve(address: str, token: str | None) -> None:
        st_config.set_option("server.address", address)
        if token is None:
            monkeypatch.delenv("SAE_LAB_TOKEN", raising=False)
        else:
            monkeypatch.setenv("SAE_LAB_TOKEN", token)

    yield serve
    st_config.set_option("server.address", before)


def app(query: dict | None = None, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if page:
        at.switch_page(page)
    return at.run()


def shows_only_the_prompt(at: AppTest) -> bool:
    """Nothing of the lab: no title, table, metric, chart, and nothing in the sidebar."""
    assert not at.exception, [e.value for e in at.exception]
    drawn = [*at.title, *at.subheader, *at.dataframe, *at.metric, *at.button, *at.selectbox, *at.expander]
    return (not drawn and not at.sidebar.children and not at.get("vega_lite_chart") and not at.get("plotly_chart")
            and any(PROMPT in m.value for m in at.markdown))


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "", None, "192.168.1.5", "example.org"]))


def test_project_config_keeps_the_app_local():
    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1" and cfg["server"]["headless"] is True
    assert cfg["browser"]["gatherUsageStats"] is False and cfg["client"]["toolbarMode"] == "minimal"


def test_exposed_without_a_token_shows_only_the_prompt(served):
    served("0.0.0.0", TOKEN)
    at = app()
    assert shows_only_the_prompt(at)
    assert [t.label for t in at.text_input] == ["Access token"]
    assert not at.caption  # no "wrong token" note when none was given


def test_exposed_with_a_wrong_token_shows_only_the_prompt(served):
    served("0.0.0.0", TOKEN)
    for wrong in [TOKEN[:-1], TOKEN + "x", "", TOKEN.upper()]:
        at = app(query={"token": wrong})
        assert shows_only_the_prompt(at), wrong
        assert "token" not in at.query_params  # never left in the address bar
    assert any("not this lab's" in c.value for c in at.caption)
    at.text_input(key="_lab_access_input").input("still-not-the-token-42").run()
    assert shows_only_the_prompt(at)


@pytest.mark.parametrize("page", PAGE_FILES)
def test_every_page_address_is_gated(served, page):
    """/sql, /runs, ... opened directly: until a session reaches st.navigation Streamlit runs the page file itself."""
    served("0.0.0.0", TOKEN)
    assert shows_only_the_prompt(app(page=page)), page
    assert shows_only_the_prompt(app(page=page, query={"token": "not-" + TOKEN})), page


def test_exposed_with_the_token_renders_the_lab(served):
    served("0.0.0.0", TOKEN)
    at = app(query={"token": TOKEN})
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Lab notebook" and at.metric
    assert [e for e in at.sidebar.expander if "Launch a sweep" in e.label]
    assert "token" not in at.query_params
    at.run()  # the next run (a click, a page change) no longer carries ?token=: kept in session_state
    assert at.title[0].value == "Lab notebook" and "Access token" not in [t.label for t in at.text_input]


def test_typing_the_token_opens_the_lab(served):
    served("0.0.0.0", TOKEN)
    at = app()
    at.text_input(key="_lab_access_input").input(f"  {TOKEN} ").run()
    assert not at.exception and at.title[0].value == "Lab notebook"


def test_exposed_with_no_token_set_refuses_everyone(served):
    served("0.0.0.0", None)
    at = app(query={"token": "anything-at-all-0123456789"})
    assert shows_only_the_prompt(at) and not at.text_input
    assert "none is set" in at.markdown[0].value and "SAE_LAB_TOKEN" in at.markdown[0].value


def test_loopback_without_a_token_renders_as_before(served):
    served("127.0.0.1", None)
    at = app()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Lab notebook" and "Access token" not in [t.label for t in at.text_input]


def test_loopback_with_a_token_set_checks_it(served):
    served("127.0.0.1", TOKEN)
    assert shows_only_the_prompt(app())
    assert app(query={"token": TOKEN}).title[0].value == "Lab notebook"


def serve_cli(*args: str, token: str | None = None, tmp_path=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SAE_LAB_TOKEN"}
    if token is not None:
        env["SAE_LAB_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "lab_app.serve", "--lab", str(tmp_path / "lab"), "--port", "18501", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.168.1.5", "lab.example.org", ""])
def test_launcher_refuses_an_exposed_address_without_a_token(address, tmp_path):
    r = serve_cli("--address", address, tmp_path=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("error: ") and "SAE_LAB_TOKEN=" in line and "ADDRESS=" in line, line
    assert not (tmp_path / "lab").exists()


@pytest.mark.parametrize("token,problem", [("short", "at least 16"), ("a" * 20 + "&x", "only letters")])
def test_launcher_refuses_a_weak_or_unsafe_token(token, problem, tmp_path):
    r = serve_cli("--address", "0.0.0.0", token=token, tmp_path=tmp_path)
    assert r.returncode == 2 and problem in r.stderr and r.stderr.count("\n") == 1


def test_launcher_check_accepts_loopback_and_a_good_token(tmp_path):
    assert serve_cli("--check", tmp_path=tmp_path).returncode == 0
    assert serve_cli("--check", "--address", "0.0.0.0", token=TOKEN, tmp_path=tmp_path).returncode == 0
