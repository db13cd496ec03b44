"""Token highlighting for the app's pages: one implementation, shared with findings cards."""

from __future__ import annotations

from typing import Sequence

from findings.render import context_html, escape_markdown


def token_sequence_html(tokens: Sequence[str], acts: Sequence[float], scale: float) -> str:
    """A whole text shaded by one feature's activation (the probe)."""
    return context_html(list(tokens), list(acts), None, scale, color="76,120,168")


__all__ = ["context_html", "escape_markdown", "token_sequence_html"]
