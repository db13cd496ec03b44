"""Sweeps: specs, the DuckDB job queue, workers, leaderboards."""
