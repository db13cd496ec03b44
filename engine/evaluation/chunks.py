"""How many activation rows one encoder step takes, in evaluation and analysis alike.

A module of its own, without torch, so that configs (``AnalysisConfig``) and the command line can
name the default without importing torch: every command starts without paying for it."""

# Same chunks, same bits: evaluation's codes are the analysis's codes. 8192 rather than 16384: as fast
# (measured at 1 thread, 200k rows, k 48: 6.2-6.8 s either way) with half the [rows, d_sae]
# temporaries -- an analysis's encoding peaked 500-640 MB above its start, now ~380.
CHUNK_ROWS = 8192
