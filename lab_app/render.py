"""HTML for token contexts highlighted by activation. Every token is escaped: text is never markup."""

from __future__ import annotations

import html
from typing import Sequence


def _piece(tok: str, first: bool) -> tuple[str, bool]:
    """Word pieces (##x) join the previous token; other tokens get a space before them."""
    if tok.startswith("##"):
        return tok[2:], False
    return tok, not first


def context_html(tokens: Sequence[str], acts: Sequence[float], center: int | None, scale: float, color: str = "255,140,0") -> str:
    out = []
    for i, (tok, a) in enumerate(zip(tokens, acts)):
        text, space = _piece(str(tok), i == 0)
        alpha = 0.0 if scale <= 0 else min(1.0, max(0.0, float(a) / scale))
        style = f"background: rgba({color},{alpha:.2f}); border-radius:3px; padding:0 1px;"
        if center is not None and i == center:
            style += " outline: 1.5px solid #333;"
        title = f"{html.escape(str(tok))}: {float(a):.3f}"
        out.append(("&nbsp;" if space else "") + f'<span style="{style}" title="{title}">{html.escape(text)}</span>')
    return ('<div style="font-family: ui-monospace, monospace; font-size: 0.88rem; line-height: 1.7; flex: 1; min-width: 0; '
            'overflow-wrap: anywhere;">' + "".join(out) + "</div>")


def token_sequence_html(tokens: Sequence[str], acts: Sequence[float], scale: float) -> str:
    return context_html(tokens, acts, None, scale, color="76,120,168")
