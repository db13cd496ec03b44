"""Feature analysis: what each feature of a trained SAE means, computed once per run into DuckDB.

``analyze_run`` encodes every token of every domain once (sparse), derives statistics, contexts,
neighbours, token effects, the concept map, automatic labels (with ``label_trust``'s interval) and the
ground-truth concept scores (``concepts``) from that one encoding, and writes them in a single
transaction; ``queries`` holds the reads the app makes.
"""
