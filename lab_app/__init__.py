"""The lab app (Streamlit): pages over the run history, the concept map, the inspector, findings, SQL."""
