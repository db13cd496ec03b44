"""The inspector's action area: findings cards for this feature, and interventions on it."""

from __future__ import annotations

from typing import Any

import streamlit as st


def render(run_id: str, feature: int, detail: dict[str, Any], info: dict[str, Any]) -> None:
    st.divider()
    st.subheader("Findings and interventions")
    st.caption("Findings cards and interventions appear here once those parts of the lab are installed.")
