"""The data lake in the data bucket: its layout, and the pieces of it several functions share.

raw (ingest's landed batches), quarantine (refused messages), sample_validation (ingest's sample
rules, which `edgeloop backfill` applies too), curated (compacted samples and the late/ store, and
the partition merge compaction and backfill share), rollups (multi-resolution aggregates), context
(intervals and their timeline) and context_store (how the context path stores them, with the
line's slices), backfill (what `edgeloop backfill` writes), packs (a line's training examples).
`raw`, `quarantine` and `sample_validation` import no numpy/pandas/pyarrow: ingest and the hot
path, which run without them, use those.
"""
