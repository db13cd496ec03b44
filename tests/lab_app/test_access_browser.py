"""The access gate in a real browser against the real server (started by lab_app.serve with a token).

A fresh server is the case AppTest cannot show: before any session reaches st.navigation, Streamlit
serves /sql, /runs, ... by running the page file itself. Also checks that the page asks nothing
of any other host (no favicon from a CDN).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.helpers import REPO

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
TOKEN = "browser-token-0123456789abcdef"
PROMPT = "This lab needs its access token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed: `apt-get install chromium` (make test does it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev requirement (make test installs it)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def gated_server(tmp_path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SAE_LAB_TOKEN": TOKEN}
    with open(tmp_path / "app.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lab_app.serve", "--lab", str(tmp_path / "lab"), "--port", str(port)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, (tmp_path / "app.log").read_text()[-2000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, "the app did not listen within 90 s"
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def open_page(browser, url: str, expect: str):
    page = browser.new_page()
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(urlparse(r.url).hostname or urlparse(r.url).scheme))
    page.goto(url)
    page.wait_for_selector("[data-testid=stMain]", timeout=90_000)
    page.get_by_text(expect).first.wait_for(timeout=90_000)
    page.wait_for_timeout(1500)  # let the run finish drawing
    return page, hosts


def test_a_fresh_server_gates_every_address_and_asks_no_other_host(browser, gated_server):
    for path in ["/sql", "/runs", "/findings", "/"]:
        page, hosts = open_page(browser, gated_server + path, PROMPT)
        main = page.inner_text("[data-testid=stMain]")
        assert "SQL" not in main and "Runs" not in main and "Findings" not in main and "Lab notebook" not in main, (path, main)
        assert not page.query_selector("[data-testid=stSidebar] [data-testid=stExpander]"), path
        assert hosts <= {"127.0.0.1", "data"}, hosts
        page.close()

    page, hosts = open_page(browser, f"{gated_server}/?token={TOKEN}", "Lab notebook")
    assert PROMPT not in page.inner_text("[data-testid=stMain]")
    assert "token=" not in page.url  # taken out of the address bar (and so out of history and shared links)
    assert page.eval_on_selector("link[rel='shortcut icon']", "e => e.href").startswith("data:")  # the 🔬, drawn locally
    assert hosts <= {"127.0.0.1", "data"}, hosts
    page.close()
