"""One warm ingest invocation on a telemetry batch near IoT Core's 128 KB message limit.

The batch is what a gateway sends: every metric of the storage dataset's line interleaved by
time, in wire format 2, as many seconds as fit in MAX_PAYLOAD_BYTES. The handler runs against
moto's in-process S3 and IoT (the thing registered with its line, as provisioning does), so the
figure includes decoding, validation, the raw object's gzip JSON and the conditional PUT.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time
from datetime import date

import boto3
import numpy as np
from moto import mock_aws

from edgeloop.schemas import ColumnarSamples, IotRuleEvent, TelemetryBatch, names
from edgeloop.schemas.telemetry import MAX_PAYLOAD_BYTES
from edgeloop.schemas.telemetry_compact import encode_compact

from .storage_data import day_table

LINE_ID = "line-1"
THING = f"gw-{LINE_ID}"
BUCKET = "edgeloop-bench-ingest"
INVOCATIONS = 4  # + 1 warm-up: five full batches fit in the day of samples used


def samples_per_s_on_a_full_batch() -> float:
    metrics, metric_index, time_ms, values = _interleaved_day()
    seconds = _seconds_that_fit(metrics, metric_index, time_ms, values)
    per_batch = seconds * len(metrics)
    env = {names.DATA_BUCKET_ENV: BUCKET, names.USE_CASE_ENV: "extrusion", "AWS_DEFAULT_REGION": "eu-west-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with mock_aws():
            _register(metrics)
            from edgeloop.functions.ingest.handler import lambda_handler

            durations = []
            for i in range(INVOCATIONS + 1):  # the first one warms caches (clients, use case)
                rows = slice(i * per_batch, (i + 1) * per_batch)
                batch = _batch(metrics, metric_index[rows], time_ms[rows], values[rows], seq_first=i * per_batch)
                event = _rule_event(encode_compact(batch), received_at_ms=int(time_ms[rows][-1]) + 1_000)
                with contextlib.redirect_stdout(io.StringIO()):  # the EMF metric lines
                    start = time.perf_counter()
                    result = lambda_handler(event, None)
                    durations.append(time.perf_counter() - start)
                if result["landed_samples"] != per_batch:
                    raise AssertionError(f"the bench batch did not land whole: {result}")
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    print(f"   ingest: {per_batch:,} samples per {MAX_PAYLOAD_BYTES // 1024} KB batch")
    return per_batch / statistics.median(durations[1:])


def _interleaved_day():
    table = day_table(LINE_ID, date(2026, 1, 5))
    frame = table.select(["metric", "time_ms", "value"]).to_pandas()
    frame = frame.sort_values(["time_ms", "metric"], kind="stable")
    metrics = sorted(frame.metric.unique())
    index = frame.metric.map({m: i for i, m in enumerate(metrics)}).to_numpy(np.int64)
    return metrics, index, frame.time_ms.to_numpy(np.int64), frame.value.to_numpy()


def _seconds_that_fit(metrics, metric_index, time_ms, values) -> int:
    low, high = 1, 20_000
    while low < high:  # the largest whole number of seconds whose payload fits
        mid = (low + high + 1) // 2
        rows = slice(0, mid * len(metrics))
        size = len(encode_compact(_batch(metrics, metric_index[rows], time_ms[rows], values[rows], seq_first=0)))
        low, high = (mid, high) if size <= MAX_PAYLOAD_BYTES else (low, mid - 1)
    return low


def _batch(metrics, metric_index, time_ms, values, *, seq_first: int) -> TelemetryBatch:
    return TelemetryBatch(
        format_version=2,
        thing_name=THING,
        line_id=LINE_ID,
        seq_first=seq_first,
        seq_last=seq_first + len(time_ms) - 1,
        samples=ColumnarSamples(
            metrics=metrics, metric_index=metric_index.tolist(), time_ms=time_ms.tolist(), values=values.tolist()
        ),
    )


def _rule_event(payload: bytes, *, received_at_ms: int) -> dict:
    return IotRuleEvent.from_message(names.telemetry_topic(THING), payload, received_at_ms).model_dump()


def _register(metrics) -> None:
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    attributes = {"site": "bench", "line_id": LINE_ID, "architecture": "x86_64", "runtime_version": "1.0.0"}
    known = {name: attributes.get(name, "bench") for name in names.GATEWAY_THING_ATTRIBUTES}
    boto3.client("iot").create_thing(thingName=THING, attributePayload={"attributes": known})
