"""`python -m lab_app.bench --lab LAB [--json FILE]` (what `python -m engine bench app --lab LAB` runs,
in its own process): how long each page takes to render on a real lab.

Two measurements per page: the page script headless (AppTest: every query and chart built, cold
with caches cleared and warm), and, where Debian's chromium is installed, the browser's time from
in-app navigation (a sidebar click) until Streamlit reports the run finished — measured on a
repeat visit, and shown for the first visit too (which also downloads the chart libraries once).
Target: every page within 2 s on a lab holding a finished 36-run sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from core.errors import LabError
from core.lab import Lab
from db import query

REPO = Path(__file__).resolve().parent.parent
PAGES = [("home", None, "Lab notebook"), ("runs", "views/runs.py", "Runs"), ("map", "views/concept_map.py", "Concept map"),
         ("inspector", "views/inspector.py", "Feature inspector"), ("probe", "views/probe.py", "Text probe"),
         ("findings", "views/findings.py", "Findings"), ("sql", "views/sql.py", "SQL")]
TARGET = 2.0


def _apptest_seconds(lab: Lab, page: str | None, query: dict, repeats: int) -> tuple[float, float]:
    # deferred: streamlit is heavy, and only this measurement needs it
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["SAE_LAB_DIR"] = str(lab.root)
    times = []
    for i in range(repeats + 1):
        if i == 0:
            st.cache_data.clear()
        at = AppTest.from_file(str(REPO / "lab_app" / "app.py"), default_timeout=120)
        for k, v in query.items():
            at.query_params[k] = v
        if page:
            if page == "views/concept_map.py":  # url path "map" is not the file's name: AppTest resolves it after a run
                at.run()
            at.switch_page(page)
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
        if at.exception:
            raise LabError(f"page {page or 'home'} raised: {at.exception[0].value}")
    return times[0], statistics.median(times[1:])


def _browser_seconds(lab: Lab, paths: list[tuple[str, str]]) -> dict[str, float]:
    if not Path("/usr/bin/chromium").exists():
        return {}
    try:
        # deferred: playwright is optional: without it there are no browser figures
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SAE_LAB_DIR": str(lab.root)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "lab_app" / "app.py"),
                             "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false",
                             "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, float] = {}
    try:
        time.sleep(4)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu",
                                  "--disable-background-networking", "--disable-component-update", "--no-first-run"])
            page = b.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")  # load the app once, as a researcher does
            page.wait_for_selector("[data-testid=stMain] h1", timeout=120_000)
            page.wait_for_timeout(4000)
            for visit in ("first", "again"):  # the first visit also downloads the chart libraries (once per browser)
                for title, path in paths:
                    # Navigate inside the app (the sidebar link): the page, not the JS bundle, is what renders.
                    t0 = time.perf_counter()
                    page.locator("[data-testid=stSidebarNav]").get_by_text(title, exact=True).click()
                    page.get_by_role("heading", name=title).first.wait_for(timeout=120_000)
                    page.wait_for_timeout(100)
                    page.wait_for_selector("[data-testid=stStatusWidget]", state="detached", timeout=120_000)
                    out[f"{visit}:{path}"] = time.perf_counter() - t0
            b.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return out


def bench_app(lab: Lab) -> list[dict]:
    """Each page's time (script cold and warm, browser first and repeat visit), printed and returned."""
    if not lab.db.exists():
        raise LabError(f"no lab at {lab.root}: pass --lab with a lab holding a finished sweep")
    n_runs = int(query(lab, "SELECT count(*) FROM runs WHERE status = 'FINISHED'").iloc[0, 0])
    feats = query(lab, "SELECT run_id, feature FROM features WHERE NOT dead ORDER BY run_id DESC, freq DESC LIMIT 1")
    q = {"run": feats.iloc[0]["run_id"], "feature": str(int(feats.iloc[0]["feature"]))} if len(feats) else {}
    print(f"\nApp pages on {lab.root} ({n_runs} finished runs); target: each page within {TARGET:.0f} s")
    rows = []
    for name, page, path in PAGES:
        cold, warm = _apptest_seconds(lab, page, q if name == "inspector" else {}, repeats=2)
        rows.append({"page": name, "script_cold_s": cold, "script_warm_s": warm})
    titles = [(t, t) for _, _, t in PAGES]
    browser = _browser_seconds(lab, titles[1:] + titles[:1])  # start on home, come back to it last
    for r, (title, _) in zip(rows, titles):
        r["browser_first_s"], r["browser_s"] = browser.get(f"first:{title}"), browser.get(f"again:{title}")
        worst = max(v for v in (r["script_cold_s"], r["browser_s"]) if v is not None)
        b = "   —  " if r["browser_s"] is None else f"{r['browser_s']:5.2f}"
        f = "   —  " if r["browser_first_s"] is None else f"{r['browser_first_s']:5.2f}"
        print(f"  {r['page']:10s} script cold {r['script_cold_s']:5.2f} s · warm {r['script_warm_s']:5.2f} s · "
              f"browser {b} s (first visit {f} s)  {'ok' if worst <= TARGET else 'SLOW'}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab_app.bench", description="render time of every app page on a lab")
    p.add_argument("--lab", required=True, help="a lab holding a finished sweep")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    try:
        rows = bench_app(Lab.at(args.lab))
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
