"""The hot path copies a raw set object (batched ingest: one object per SQS batch) batch by batch."""

from __future__ import annotations

import pytest
from test_data_hot_path import BUCKET, aws, object_created, raw_batch, stored_records  # noqa: F401 - aws is a fixture

from edgeloop.cloud.datalake.raw import raw_set_key
from edgeloop.functions.hot_path import handler
from edgeloop.functions.hot_path.logic import raw_key_from_event, read_landed_batches
from edgeloop.schemas.raw_batch import RawBatchSet


def test_handler_copies_every_batch_of_a_set_with_its_own_dimensions_and_versions(aws):  # noqa: F811
    batches = [
        raw_batch(30, seq_first=100, thing="gw-1"),
        raw_batch(20, seq_first=7, thing="gw-2", skipped=frozenset({3})),
    ]
    key = raw_set_key(batches)
    aws.put_object(Bucket=BUCKET, Key=key, Body=RawBatchSet(batches=batches).to_gzip_json())

    assert raw_key_from_event(object_created(key), data_bucket=BUCKET) == key
    result = handler.lambda_handler(object_created(key), None)

    assert result["samples"] == result["written"] == 49 and result["rejected"] == 0
    stored = {(r["Dimensions"][0]["Value"], r["Version"]) for r in stored_records()}
    assert stored == {("gw-1", 101 + i) for i in range(30)} | {("gw-2", 8 + i) for i in range(20) if i != 3}


def test_a_set_whose_batches_are_not_the_ones_its_key_names_is_refused(aws):  # noqa: F811
    named, held = [raw_batch(4, seq_first=0)], [raw_batch(4, seq_first=100)]
    key = raw_set_key(named)
    aws.put_object(Bucket=BUCKET, Key=key, Body=RawBatchSet(batches=held).to_gzip_json())
    with pytest.raises(ValueError, match="its key names"):
        read_landed_batches(BUCKET, key)
    result = handler.lambda_handler(object_created(key), None)
    assert result["refused"] and stored_records() == []
