"""`edgeloop backfill`: historical recordings into the data lake through ingest's validation.

    plan = plan_backfill(files, mapping_path, line_id=..., use_case=..., thing_name=None, lines=...)
    reports = run_backfill(plan, bucket)

The path, and why it is this one:
- Validation and quarantine are ingest's, not a copy: each recording is laid out, a day at a time,
  as telemetry batch documents of at most MAX_BATCH_SAMPLES samples, and every chunk goes through
  `cloud.datalake.sample_validation.validate_samples` (the code ingest runs: the same screening,
  strict schema and per-sample rules a gateway's message meets) with no lateness SLA: a recording is
  old by nature. A refused sample goes to quarantine/ with ingest's reason, its field being the
  file's column and its error naming the file and line; the rest lands.
- Landing writes curated Parquet directly, one part per (line, event date), with compaction's
  format instead of raw JSON batches for compaction to fold: gzip JSON of ~20 M samples and
  compaction's pandas merge would take minutes, the direct write takes seconds (`make
  bench-onboarding`). A partition that already holds parts goes through compaction's own merge
  (cloud.datalake.curated.merge_partition). See cloud/datalake/backfill.py.
- Exactly once: a backfilled reading's seq is derived from (metric, event time) (raw.backfill_seq),
  so a re-run, an overlapping or a corrected file stores each reading once; the lineage object
  (written last) marks a completed run, and a run whose lineage exists lands nothing again.
- Raw layer: the recording as received, under raw_backfill/ (not raw/: the hot path would copy
  history into Timestream), beside its lineage (raw.BackfillLineage); see raw.py.
- Context: the mapping's `context:` block gives runs, limits and states
  (device_shims/recording_context.py); they are stored as the context function stores a gateway's
  (cloud.datalake.context_store: each interval meets its strict rule, upserted, the line's slices
  rebuilt).

Everything that can be wrong with the mapping, the use case, the files' columns, timestamps or
context configuration is found by `plan_backfill`, before anything is written (BackfillError naming
key, value and file).

This package reads recordings with the device shims' readers and mapping (device_shims/), so it
lives beside the CLI; what it writes, and how, is cloud/datalake's (backfill.py, curated.py,
context_store.py, sample_validation.py). Modules, in the order a run goes through them:
recording.py (one file read and checked), plan.py (the plan: mapping, identity, every file),
layout.py (samples a day at a time in curated order), validation.py (ingest's validation, in
worker processes), quarantine.py (refused samples), run.py (landing and the lineage).
"""

from __future__ import annotations

from .plan import BackfillPlan, Series, plan_backfill
from .recording import BackfillError, Recording
from .run import FileReport, backfill_id, run_backfill

__all__ = [
    "BackfillError",
    "BackfillPlan",
    "FileReport",
    "Recording",
    "Series",
    "backfill_id",
    "plan_backfill",
    "run_backfill",
]
