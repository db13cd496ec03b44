"""Token highlighting for the app's pages: one implementation, shared with findings cards."""

from __future__ import annotations

from typing import Sequence

from findings.render import context_html, escape_markdown

GUESS = "no reliable label (best guess: "


def short_label(title):
    """'no reliable label (best guess: x | y)' reads 'guess: x | y' where space is short (tables, links)."""
    if isinstance(title, str) and title.startswith(GUESS) and title.endswith(")"):
        return "guess: " + title[len(GUESS):-1]
    return title


def token_sequence_html(tokens: Sequence[str], acts: Sequence[float], scale: float) -> str:
    """A whole text shaded by one feature's activation (the probe)."""
    return context_html(list(tokens), list(acts), None, scale, color="76,120,168")


__all__ = ["context_html", "escape_markdown", "short_label", "token_sequence_html"]
