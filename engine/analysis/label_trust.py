"""When to believe an automatic label: its detection score's chance level and 95 % interval.

A label's detection score is the balanced accuracy (TPR + TNR) / 2 of "a label token is here"
predicting "the feature fires" on held-out text; chance is 0.5. A score from a handful of firing
tokens can read 1.00 or 0.51 by luck, so every score gets a 95 % interval: Wilson intervals for
the true-positive rate (over the held-out tokens where the feature fires) and the true-negative
rate (over those where it does not), combined for their mean by the MOVER method (Zou & Donner,
2008: the interval of a sum of independent estimates from each one's own interval).

A label is **reliable** when the interval's lower end is at least ``RELIABLE_LOW`` = 0.6, i.e. it
clears chance (0.5) by a margin of 0.1 with 95 % confidence. Only a reliable label is shown as a
feature's title; any other reads "no reliable label (best guess: ...)".
"""

from __future__ import annotations

import numpy as np

CHANCE = 0.5
MARGIN = 0.1
RELIABLE_LOW = CHANCE + MARGIN
Z95 = 1.959963984540054


def wilson(successes: np.ndarray, n: np.ndarray, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion (NaN where n = 0)."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def balanced_accuracy_interval(tp: np.ndarray, n_pos: np.ndarray, tn: np.ndarray, n_neg: np.ndarray,
                               z: float = Z95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(balanced accuracy, low, high) from true positives of n_pos and true negatives of n_neg."""
    tp, n_pos, tn, n_neg = (np.asarray(a, dtype=np.float64) for a in (tp, n_pos, tn, n_neg))
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, tnr = tp / n_pos, tn / n_neg
    l1, u1 = wilson(tp, n_pos, z)
    l2, u2 = wilson(tn, n_neg, z)
    ba = (tpr + tnr) / 2
    low = ba - np.sqrt((tpr - l1) ** 2 + (tnr - l2) ** 2) / 2
    high = ba + np.sqrt((u1 - tpr) ** 2 + (u2 - tnr) ** 2) / 2
    return ba, low, high


def is_reliable(low: float | None) -> bool:
    return low is not None and np.isfinite(low) and low >= RELIABLE_LOW


def label_title(label: str | None, reliable: bool | None) -> str | None:
    """How a label may be shown as a feature's title: as it is only when reliable.

    ``reliable`` is None for an analysis made before intervals existed: re-analyse to score it;
    until then the label is shown as a guess too."""
    if not label:
        return None
    return label if reliable else f"no reliable label (best guess: {label})"


# label_title in SQL, for listings that return many features at once (same text, same rule).
TITLE_SQL = ("CASE WHEN label IS NULL THEN NULL WHEN coalesce(label_reliable, false) THEN label "
             "ELSE 'no reliable label (best guess: ' || label || ')' END")


def confidence_for(score: float | None, low: float | None, reliable: bool | None, precision: float | None = None) -> str:
    """The confidence a findings card is prefilled with: follows the interval, never "high" when unreliable.

    high: reliable, the whole interval at or above 0.8, and the label right at least half the
    time it predicts firing (precision >= 0.5: balanced accuracy alone ignores how rare firing
    is, so "fires on '.'" can score 0.97 for a feature that fires on 1 '.' in 100);
    medium: reliable; low otherwise."""
    if not reliable or score is None or low is None:
        return "low"
    return "high" if low >= 0.8 and precision is not None and precision >= 0.5 else "medium"
