"""Helpers of the intervention tests (real forwards, no mocks)."""

from __future__ import annotations

import torch

from engine.collection.hooks import record

ENCODER_TEXT = "def main(argv):\n    return parse(argv)  # the entry point of the command line"
CAUSAL_TEXT = "The quick brown fox jumps over the lazy dog and returns home."


def latents_on_text(session, text: str) -> torch.Tensor:
    """Dense SAE latents [edited positions, d_sae] of the text's clean activations."""
    b = session.text_batch(session.text_ids(text))
    sink: dict[str, torch.Tensor] = {}
    with record({"site": session.module}, sink), torch.inference_mode():
        session.loaded.model(input_ids=b.ids, attention_mask=b.mask)
    return session.sae.encode(sink["site"][b.keep].float())


def strongest_and_silent(session, text: str) -> tuple[int, int]:
    """The feature with the largest activation on the text, and one that never fires on it."""
    f = latents_on_text(session, text)
    peak = f.max(0).values
    silent = int((peak == 0).nonzero()[0, 0])
    return int(peak.argmax()), silent
