"""Plain text tables: what every command that prints a DataFrame (``sql``, ``sweep-status``,
``interventions``, ``findings list``) shows."""

from __future__ import annotations

from typing import Any


def format_table(df, max_rows: int = 200, float_digits: int = 4) -> str:
    """A plain text table (what `sql` prints)."""
    if df is None or len(df.columns) == 0:
        return "(no result)"
    shown = df.head(max_rows)

    def cell(v: Any) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, float):
            return "NaN" if v != v else f"{v:.{float_digits + 2}g}"
        text = str(v).replace("\n", " ")
        return text if len(text) <= 60 else text[:57] + "..."

    rows = [[cell(v) for v in r] for r in shown.itertuples(index=False)]
    head = [str(c) for c in shown.columns]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    sep = "  ".join("-" * w for w in widths)
    body = "\n".join("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)) for r in rows)
    more = f"\n({len(df)} rows, {max_rows} shown)" if len(df) > max_rows else f"\n({len(df)} row{'s' if len(df) != 1 else ''})"
    return f"{line}\n{sep}\n{body}{more}" if rows else f"{line}\n{sep}\n(0 rows)"


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
