"""Live accuracy reads the gzip-compressed predictions the landing writes now and the plain JSON lines
objects landed before (cloud/datalake/landed_jsonl.py); a damaged .gz object is skipped and counted."""

from __future__ import annotations

import pandas as pd
from live_accuracy_fixtures import DAY, USE_CASE, bucket  # noqa: F401 (fixture)

from benchmarks.monitoring_data import line_day
from edgeloop.cloud import s3
from edgeloop.cloud.datalake.landed_jsonl import gzip_jsonl
from edgeloop.functions.live_accuracy import store
from edgeloop.schemas import names


def test_gzipped_and_plain_objects_read_the_same_and_a_damaged_one_is_skipped(bucket):  # noqa: F811
    messages = line_day(DAY, USE_CASE, hours=1).predictions
    assert len(messages) > 20
    prefix = f"{names.PREDICTIONS_PREFIX}/line=line-1/made_date={DAY:%Y-%m-%d}/"
    lines = [(m.model_dump_json() + "\n").encode() for m in messages]
    half = len(lines) // 2
    s3.put_bytes(bucket, f"{prefix}before.jsonl", b"".join(lines[:half]))  # landed before compression
    s3.put_bytes(bucket, f"{prefix}after{names.LANDED_PREDICTIONS_SUFFIX}", gzip_jsonl(b"".join(lines[half:])))
    s3.put_bytes(bucket, f"{prefix}damaged{names.LANDED_PREDICTIONS_SUFFIX}", gzip_jsonl(b"".join(lines))[:-9])
    skipped = store.Skipped()
    frame = store.read_predictions(bucket, "line-1", f"{DAY:%Y-%m-%d}", skipped)
    expected = store.predictions_frame(list(messages))
    pd.testing.assert_frame_equal(
        frame.sort_values("made_at_ms", ignore_index=True), expected.sort_values("made_at_ms", ignore_index=True)
    )
    (example,) = skipped.examples
    assert skipped.count == 1 and "damaged.jsonl.gz" in example and "gzip" in example, example
