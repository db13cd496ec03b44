"""Argument types shared by every CLI command: a bad number is an argparse error naming the value."""

from __future__ import annotations

import argparse

from core.errors import LabError


def int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def float_arg(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


def comma_list(flag: str, text: str, example: str) -> list[str]:
    """The entries of a comma-separated value. An empty value or an empty entry (``prose,,code``)
    is refused rather than skipped: silently training the defaults, or fewer domains than typed,
    hides the typo until the results look wrong."""
    if not text.strip():
        raise LabError(f"{flag} is empty: list one or more entries separated by commas, e.g. {flag} {example}")
    items = [t.strip() for t in text.split(",")]
    if "" in items:
        raise LabError(f"{flag} '{text}' has an empty entry (entry {items.index('') + 1}): "
                       f"remove the extra comma, e.g. {flag} {example}")
    return items
