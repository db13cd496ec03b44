"""Evaluation: reconstruction metrics, splice fidelity, the 0-5 quality score."""
