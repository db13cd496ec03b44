"""What a person sees on each page, measured in a real browser (test_browser.py walks every page with it).

Each check returns plain-English problems ("chart 2 is cut at the right edge …"), so a failing test
reads like a reviewer's note. What is measured, and why:

* charts: the drawn graphic (the SVG or canvas, which can be larger than its container) of no two
  charts intersect, and none reaches past the right edge of its column (it would be cut off);
* legends and axes: no legend entry ends in "…" (Vega truncates past its label limit), no axis
  title is a raw column key such as ``transfer_ratio``;
* metrics: no ``stMetricValue`` or ``stMetricLabel`` is cut (scrollWidth > clientWidth);
* run tables: the headers FVU and transfer are among the columns drawn without scrolling (the grid
  draws on a canvas; its accessibility table lists the columns in view, so that is what is read).

The table grid is drawn on a canvas, so a truncated *header* inside it cannot be read from the
page; the run tables pin their metric columns instead, and the columns in view are asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Console errors Streamlit itself emits on a page's first load: the frontend probes the health and
# host-config endpoints relative to the page's path (/runs/_stcore/health) before the root ones.
STREAMLIT_OWN_404 = ("/_stcore/health", "/_stcore/host-config")

CHECK_JS = r"""
() => {
  const problems = [];
  const shown = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const nameOf = (c, i) => {
    let box = c.closest('[data-testid=stElementContainer]');
    let prev = box && box.previousElementSibling;
    const text = prev ? prev.innerText.trim().split('\n')[0].slice(0, 50) : '';
    return `chart ${i + 1}` + (text ? ` (after "${text}")` : '');
  };
  const graphics = [];
  [...document.querySelectorAll('[data-testid=stVegaLiteChart], [data-testid=stPlotlyChart]')].filter(shown).forEach((c, i) => {
    const name = nameOf(c, i);
    const g = c.querySelector('svg.marks, svg.main-svg, canvas');
    if (!g) return;
    const r = g.getBoundingClientRect();
    const col = c.closest('[data-testid=stColumn]') || c.closest('[data-testid=stMainBlockContainer]') || document.body;
    const cr = col.getBoundingClientRect();
    if (r.right > cr.right + 2)
      problems.push(`${name} is cut at the right edge: drawn to x=${Math.round(r.right)}, `
                    + `its column ends at ${Math.round(cr.right)}`
        );
    graphics.push({name, r});
    c.querySelectorAll('.role-legend text, .legend text').forEach(t => {
      const s = t.textContent || '';
      if (s.endsWith('…')) problems.push(`${name}: legend entry truncated: "${s}"`);
    });
    c.querySelectorAll('.role-axis-title text, .g-xtitle text, .g-ytitle text').forEach(t => {
      const s = (t.textContent || '').trim();
      if (/^[a-z0-9]+(_[a-z0-9]+)+$/.test(s)) problems.push(`${name}: axis title is a raw column key: "${s}"`);
    });
  });
  for (let i = 0; i < graphics.length; i++) for (let j = i + 1; j < graphics.length; j++) {
    const a = graphics[i].r, b = graphics[j].r;
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left), h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 1 && h > 1)
      problems.push(`${graphics[i].name} and ${graphics[j].name} overlap (${Math.round(w)}×${Math.round(h)} px)`);
  }
  document.querySelectorAll('[data-testid=stMetricValue], [data-testid=stMetricLabel]').forEach(m => {
    if (!shown(m)) return;
    [m, ...m.querySelectorAll('*')].forEach(e => {
      if (e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0)
        problems.push(`metric text cut: "${m.innerText.trim()}" needs ${e.scrollWidth} px, has ${e.clientWidth}`);
    });
  });
  return [...new Set(problems)];
}
"""

def chart_problems(page) -> list[str]:
    return page.evaluate(CHECK_JS)


def visible_headers(page, index: int = 0) -> list[str] | None:
    """The headers of the index-th visible table that are drawn without scrolling it sideways (the grid
    lists only the cells it draws, and draws only once it is on screen: it is scrolled into view first)."""
    try:  # the first visit after the server starts can draw its tables a moment after the title
        page.locator("[data-testid=stDataFrame]:visible").nth(index).wait_for(timeout=30_000)
    except Exception:
        return None
    grids = page.locator("[data-testid=stDataFrame]:visible")
    if grids.count() <= index:
        return None
    grid = grids.nth(index)
    grid.scroll_into_view_if_needed()
    try:
        grid.locator("th").first.wait_for(state="attached", timeout=10_000)
    except Exception:
        return []
    return [t.strip() for t in grid.locator("th").all_text_contents()]


def run_table_problems(page, index: int, where: str) -> list[str]:
    heads = visible_headers(page, index)
    if heads is None:
        return [f"{where}: no run table"]
    missing = [h for h in ("FVU", "transfer ×") if h not in heads]
    return [f"{where}: the run table shows {heads} without scrolling: {missing} hidden"] if missing else []


CHARTS_DRAWN_JS = """() => [...document.querySelectorAll('[data-testid=stVegaLiteChart], [data-testid=stPlotlyChart]')]
  .every(c => c.querySelector('svg.marks, svg.main-svg, canvas'))"""


SCRIPT_STATE = "document.querySelector('[data-testid=stApp]')?.getAttribute('data-test-script-state')"


def settle(page, extra_ms: int = 200, heading: str | None = None) -> None:
    """Until the script run a click or a page load started has finished and every chart has drawn.

    Streamlit marks the app ``data-test-script-state="running"`` while a script runs; a check made
    before that run starts would measure the previous view, so the run is waited for, then its end.
    The wait for the start is polled every animation frame, so even a fast run is seen; it is long
    (15 s) because on a loaded machine a click's run can start seconds later: with a 3 s wait, a
    screenshot of the Runs page's "Sweep" section showed the previous section, greyed out. Once the
    run has ended, no element may still be stale (``data-stale``: drawn by the previous run)."""
    try:
        page.wait_for_function(f"() => {SCRIPT_STATE} === 'running'", timeout=15_000, polling="raf")
    except Exception:  # already finished (or not yet connected: the title wait below covers that)
        pass
    # Every page has a title: once it shows (the page's own, when named), the page's script has run.
    title = page.locator("[data-testid=stMain] h1", has_text=heading) if heading else page.locator("[data-testid=stMain] h1")
    title.first.wait_for(timeout=60_000)
    page.wait_for_function(f"() => {SCRIPT_STATE} === 'notRunning'", timeout=120_000)
    try:
        page.wait_for_function("() => !document.querySelector('[data-testid=stElementContainer][data-stale=true]')",
                               timeout=30_000)
    except Exception:  # (a view left stale shows greyed in its screenshot)
        pass
    try:
        page.wait_for_function(CHARTS_DRAWN_JS, timeout=20_000)
    except Exception:  # a chart that never draws is left to the checks (it has nothing to measure)
        pass
    page.wait_for_timeout(extra_ms)


def shoot(page, folder: Path, name: str) -> None:
    """The whole page: Streamlit scrolls inside stMain, so a full-page screenshot alone shows one screen.
    The viewport grows to the content's height for the shot (charts stretch to the width, not the height)."""
    folder.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    tall = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
                         "[data-testid=stSidebarContent]')].map(e => e.scrollHeight))")
    if tall > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(int(tall), 12_000)})
        page.wait_for_timeout(150)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    page.set_viewport_size(size)


# -- the walk over every page, shared by the browser test ----------------------------------------
SIZES = [(1280, 720), (1440, 900)]
NAV_TITLES = {"/": "Lab notebook", "/runs": "Runs", "/map": "Concept map", "/inspector": "Feature inspector",
              "/probe": "Text probe", "/findings": "Findings", "/sql": "SQL"}
RUNS_SECTIONS = ["Over time", "Training curves", "A run's figures", "Sweep", "Diff two runs"]
# (path, heading, index of the run table among the visible tables or None)
PAGES = [("/", "Lab notebook", 0), ("/runs", "Runs", 0), ("/map", "Concept map", None),
         ("/inspector", "Feature inspector", None), ("/probe", "Text probe", None), ("/findings", "Findings", None),
         ("/sql", "SQL", 0)]


def ensure_finished_sweep(lab, repo: Path) -> None:
    """A finished sweep whose runs train one step each (k = 4 and 8), unless the lab has one already
    (test_browser.py's first test launches one from the sidebar: the walk reuses it)."""
    # deferred: the engine is only needed when the walk runs alone
    import db
    from engine.sweeps.queue import enqueue_sweep
    from engine.sweeps.spec import SweepSpec

    if db.query_rows(lab, "SELECT count(*) FROM jobs WHERE status = 'FINISHED'")[0][0]:
        return
    enqueue_sweep(lab, SweepSpec.from_dict({
        "name": "tiny", "parameters": {"k": [4, 8]},
        "base": {"layer": 2, "train_domains": ["prose"], "sae": {"d_sae": 128}, "data": {"tokens_per_domain": 4000},
                 "train": {"epochs": 1.0}}}))
    proc = subprocess.run([sys.executable, "-m", "engine", "--lab", str(lab.root), "-q", "worker", "--threads", "2"],
                          cwd=repo, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]


def resized(page) -> None:
    """After a viewport change: until every chart has drawn again and no chart moves between two checks.
    The page's script does not rerun on a resize (Streamlit lays out by CSS); the charts redraw to
    their columns' new widths in the browser, a few frames later."""
    boxes = "() => JSON.stringify([...document.querySelectorAll('[data-testid=stVegaLiteChart] svg.marks, " \
            "[data-testid=stVegaLiteChart] canvas, [data-testid=stPlotlyChart] svg.main-svg')]" \
            ".map(g => { const r = g.getBoundingClientRect(); return [r.left, r.top, r.width, r.height].map(Math.round); }))"
    page.wait_for_timeout(300)
    before = page.evaluate(boxes)
    for _ in range(20):
        page.wait_for_timeout(150)
        now = page.evaluate(boxes)
        if now == before:
            break
        before = now
    try:
        page.wait_for_function(CHARTS_DRAWN_JS, timeout=10_000)
    except Exception:  # a chart that never draws is left to the checks
        pass


def walk(page, base: str, sizes: list[tuple[int, int]], shots: Path) -> list[str]:
    """Visit every page and Runs section and look at each at every viewport size; the problems a person
    would see.

    Pages are reached through the sidebar's links, as a person moves around (a page load per page
    would reload the app's scripts each time). Each view is drawn once and then looked at in every
    size: a resize redraws in the browser without running the page's script again, which halves the
    walk's server work against visiting every page once per size."""
    problems: list[str] = []
    page.set_viewport_size({"width": sizes[0][0], "height": sizes[0][1]})
    page.goto(base + "/")
    for path, heading, run_table in PAGES:
        if path != "/":
            page.locator("[data-testid=stSidebarNav] a", has_text=NAV_TITLES[path]).first.click()
        settle(page, 300, heading)
        if page.locator("[data-testid=stException]").count():
            problems.append(f"{path}: shows an exception")
        for section in ([None] if path != "/runs" else RUNS_SECTIONS):
            if section:
                page.locator("[data-testid=stButtonGroup] button", has_text=section).first.click()
                settle(page, 300, heading)
            for w, h in sizes:
                if page.viewport_size != {"width": w, "height": h}:
                    page.set_viewport_size({"width": w, "height": h})
                    resized(page)
                where = f"{w}×{h} {path}" + (f" [{section}]" if section else "")
                problems += [f"{where}: {p}" for p in chart_problems(page)]
                if run_table is not None and section in (None, "Over time") and w == 1280:
                    problems += run_table_problems(page, run_table, where)
                shoot(page, shots, f"{w}x{h}{path.replace('/', '-').rstrip('-') or '-home'}"
                                   + (f"-{section.lower().replace(' ', '-').replace(chr(39), '')}" if section else ""))
        if path == "/probe":  # a row click must switch the feature picker
            problems += probe_row_problems(page)
            shoot(page, shots, "probe-row-selected")
    return problems


def probe_row_problems(page) -> list[str]:
    """On the probe page, click the row of a token whose top feature is not the picker's first choice:
    the picker must follow."""
    grid = page.locator("[data-testid=stDataFrame]").first
    grid.locator("th").first.wait_for(state="attached", timeout=60_000)
    heads = grid.locator("th").all_text_contents()
    if "top feature" not in heads:
        return [f"probe: the token table shows {heads}, not its 'top feature' column"]
    col = heads.index("top feature")
    picker = page.get_by_role("combobox", name="Feature", exact=True)
    before = picker.input_value()
    for row in range(6):
        cell = grid.locator(f"td[aria-colindex='{col + 1}']").nth(row)
        feature = cell.text_content().strip()
        if feature and not (before == feature or before.startswith(f"{feature} ")):
            break
    else:
        return ["probe: the first rows all have the picker's feature: nothing to click"]
    box = grid.bounding_box()
    header = 35  # Streamlit's grid: 35 px rows, a row-marker column at the left when rows are selectable
    page.mouse.click(box["x"] + 18, box["y"] + header + 35 * row + 17)
    settle(page, 300, "Text probe")
    # The selection can take a second script run (the row sets the picker, then the page reruns); on a
    # loaded machine settle() may see the pause between the two. Wait for the picker, not for a time.
    for _ in range(120):
        after = picker.input_value()
        if after == feature or after.startswith(f"{feature} "):
            return []
        page.wait_for_timeout(500)
    return [f"probe: selected row {row} (top feature {feature}) but the picker shows '{after}'"]



