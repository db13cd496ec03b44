"""What a person sees on each page, measured in a real browser (used by test_browser_legibility.py).

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


def settle(page, extra_ms: int = 400) -> None:
    """Until the script has finished (Streamlit's running indicator gone) and charts have drawn."""
    page.wait_for_selector("[data-testid=stMain] h1", timeout=60_000)  # every page has a title: the script has started
    page.wait_for_timeout(300)
    try:
        page.wait_for_selector("[data-testid=stStatusWidget]", state="detached", timeout=60_000)
    except Exception:  # the sidebar's live panel reruns every 2 s and may show it again: not a failure
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
        page.wait_for_timeout(300)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    page.set_viewport_size(size)
