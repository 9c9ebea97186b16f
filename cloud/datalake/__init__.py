"""The data lake in the data bucket: its layout, and the pieces of it several functions share.

raw (ingest's landed batches), quarantine (refused messages), curated (compacted samples and the
late/ store), rollups (multi-resolution aggregates), context (intervals and their timeline), packs
(a line's training examples). `raw` and `quarantine` import no numpy/pandas/pyarrow: ingest and
the hot path, which run without them, use those two.
"""
