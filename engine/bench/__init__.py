"""Benchmarks: figures measured side by side (`python -m engine bench`)."""
