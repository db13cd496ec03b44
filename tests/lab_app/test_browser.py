"""The app in a real browser: Debian's chromium driven by Playwright against `streamlit run`.

Visits every page, launches a tiny sweep from the sidebar and watches it finish in the live panel,
opens a deep link to a feature, labels a feature of an imported SAE (issue 16) into a findings card;
then, on that lab (a finished experiment, a finished sweep of one-step runs and the imported SAE),
walks every page and Runs section at 1280×720 and 1440×900 asserting what a person would see
(tests/lab_app/legibility.py). Screenshots of every view are kept in
test-artifacts/screenshots/ (the run's output: the folder is gitignored).
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

import db
from tests.helpers import REPO, copy_lab
from tests.lab_app.legibility import SIZES, STREAMLIT_OWN_404, ensure_finished_sweep, walk

CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO / "test-artifacts" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        print(f"SKIP reason: {CHROMIUM} is not installed (make test installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed: `apt-get install chromium` (make test does it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev requirement (make test installs it)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def app_server(finished_lab, tmp_path_factory):
    lab = copy_lab(finished_lab[0].root, tmp_path_factory.mktemp("browser") / "lab")
    port = _free_port()
    env = {**os.environ, "SAE_LAB_DIR": str(lab.root), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "lab_app" / "app.py"), "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.3)
    yield base, lab, finished_lab[2]
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    # Stop any worker the app started for the sweep.
    subprocess.run(["pkill", "-f", "--", f"--lab {lab.root}"], check=False)


def settle(page, extra: float = 1.0) -> None:
    page.wait_for_selector("[data-testid=stApp]", timeout=60_000)
    page.wait_for_timeout(500)
    try:
        page.wait_for_selector("[data-testid=stStatusWidget]", state="detached", timeout=60_000)
    except Exception:
        pass
    page.wait_for_timeout(int(extra * 1000))


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def choose(page, selectbox, option: str, tries: int = 5) -> None:
    """Pick an option of a Streamlit selectbox; the sidebar's live panel reruns every 2 s and can
    swallow a click, so open the list again until the option shows."""
    selectbox.wait_for(timeout=30_000)
    for _ in range(tries):
        selectbox.locator("input").click()
        try:
            page.get_by_role("option", name=option).click(timeout=5_000)
            return
        except Exception:
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
    shot(page, "failed-select")
    raise AssertionError(f"could not choose '{option}'")


def test_every_page_a_sweep_from_the_sidebar_and_a_deep_link(browser, app_server):
    base, lab, outcomes = app_server
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    for path, heading in [("/", "Lab notebook"), ("/runs", "Runs"), ("/map", "Concept map"), ("/inspector", "Feature inspector"),
                          ("/probe", "Text probe"), ("/findings", "Findings"), ("/sql", "SQL")]:
        page.goto(base + path)
        settle(page, 1.5)
        page.get_by_role("heading", name=heading).first.wait_for(timeout=30_000)
        assert not page.locator("[data-testid=stException]").count(), f"{path} shows an exception"
        shot(page, (path.strip("/") or "home"))

    # Launch a tiny custom sweep from the sidebar and watch it finish in the live panel.
    page.goto(base + "/")
    settle(page)
    sidebar = page.locator("[data-testid=stSidebar]")
    sidebar.get_by_text("Launch a sweep").click()
    choose(page, sidebar.locator("[data-testid=stSelectbox]").first, "custom grid")
    settle(page, 0.5)
    sidebar.get_by_label("k (comma-separated)").fill("4")
    sidebar.get_by_label("d_sae (comma-separated)").fill("128")
    sidebar.get_by_label("d_sae (comma-separated)").press("Enter")
    settle(page, 0.5)
    sidebar.get_by_role("button", name="Budget and workers").click()
    tokens = page.get_by_label("Tokens per domain")
    tokens.fill("4000")
    tokens.press("Enter")
    epochs = page.get_by_label("Epochs")
    epochs.fill("1")
    epochs.press("Enter")
    settle(page, 0.5)
    page.keyboard.press("Escape")
    sidebar.get_by_role("button", name="Launch").click()
    sidebar.get_by_text("2 jobs queued").wait_for(timeout=180_000)
    shot(page, "sweep-launched")
    sidebar.get_by_text("2 finished").wait_for(timeout=600_000)  # the live panel refreshes by itself
    shot(page, "sweep-finished")
    assert db.query_rows(lab, "SELECT count(*) FROM jobs WHERE status = 'FINISHED'")[0][0] == 2

    # A deep link straight to a feature.
    run_id = outcomes[0].run_id
    feature = db.query_rows(lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead ORDER BY freq DESC LIMIT 1",
                            [run_id])[0][0]
    page.goto(f"{base}/?run={run_id}&feature={feature}")
    settle(page, 2)
    page.get_by_role("heading", name=f"Feature {feature}").first.wait_for(timeout=30_000)
    page.get_by_text("Top activating contexts").first.wait_for(timeout=60_000)  # the heading draws first
    shot(page, "deep-link-inspector")
    assert not errors, errors


def test_an_imported_sae_is_opened_in_the_inspector_and_labelled_into_a_card(browser, app_server, tmp_path):
    """Issue 16: an SAE from elsewhere (a sparsify folder, in sparsify's layout) imported into the lab the app is
    showing, opened in the inspector by a deep link and labelled into a findings card from there."""
    from engine.imports.conduct import import_sae, plan_import
    from engine.imports.export import export_run
    from findings import cards_for_feature

    base, lab, outcomes = app_server
    db.ensure_schema(lab)
    folder = export_run(lab, outcomes[0].run_id, "sparsify", tmp_path / "their_sparsify_run")
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Imported here, in the test's process (the sidebar's preview and import are tests/lab_app/test_import_panel.py's).
    run_id = import_sae(lab, plan_import(lab, folder)).run_id
    feature = db.query_rows(lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead ORDER BY freq DESC LIMIT 1",
                            [run_id])[0][0]
    page.goto(f"{base}/?run={run_id}&feature={feature}")
    settle(page, 2)
    page.get_by_role("heading", name=f"Feature {feature}").first.wait_for(timeout=30_000)
    page.get_by_text("Top activating contexts").first.wait_for(timeout=60_000)
    form = page.locator("[data-testid=stForm]").filter(has=page.get_by_role("button", name="Save card")).first
    form.get_by_label("Title").fill("Imported SAE: a labelled feature")
    form.get_by_role("button", name="Save card").click()
    page.get_by_text("Saved card").first.wait_for(timeout=60_000)
    shot(page, "imported-run-labelled")
    (card,) = cards_for_feature(lab, run_id, feature)
    assert card.title == "Imported SAE: a labelled feature"
    assert not errors, errors


def test_every_page_is_legible_at_two_sizes(browser, app_server):
    """Every page and Runs section at 1280×720 and 1440×900, as a person sees it (tests/lab_app/legibility.py):
    on this module's lab (the shared experiment plus the one-step sweep and the imported SAE of the tests above)."""
    base, lab, _ = app_server
    ensure_finished_sweep(lab, REPO)  # when this test runs alone
    page = browser.new_page()
    outside: list[str] = []
    console: list[str] = []
    own_404: list[str] = []
    page.on("request", lambda r: urlparse(r.url).hostname not in (None, "127.0.0.1") and r.url.split(":")[0] not in
            ("data", "blob") and outside.append(r.url))
    page.on("response", lambda r: r.status == 404 and r.url.endswith(STREAMLIT_OWN_404) and own_404.append(r.url))
    page.on("console", lambda m: m.type == "error" and console.append(m.text))
    page.on("pageerror", lambda e: console.append(f"page error: {e}"))

    problems = walk(page, base, SIZES, SHOTS)

    # Streamlit's own: "Failed to load resource … 404" once per page-relative health / host-config probe.
    streamlit_404 = "Failed to load resource: the server responded with a status of 404 (Not Found)"
    others = [c for c in console if c != streamlit_404]
    assert console.count(streamlit_404) <= len(own_404), (console, own_404)
    assert not outside, f"requests left the machine: {outside}"
    assert not others, f"console errors: {others}"
    assert not problems, "\n".join(problems)
