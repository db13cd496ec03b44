"""Findings: curated feature labels with their evidence and history."""

from __future__ import annotations

import streamlit as st

st.title("Findings")
st.info("Findings cards are not available in this build yet.")
