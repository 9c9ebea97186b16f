"""Copy one new raw object (ingest's RawBatch) into Timestream, the optional hot path.

Each landed sample becomes one record: dimensions thing_name, line_id and metric; measure "value"
(DOUBLE); time in milliseconds from the sample's time_ms; Version = seq + 1 (Timestream wants a
Version of at least 1, and sequence numbers start at 0). Requests carry at most 100 records.

Idempotence: a Lambda retry, or a re-sent EventBridge event, writes the same records with the same
versions, which Timestream treats as an upsert; a rejected record whose ExistingVersion equals
its own version is that case and is counted as a duplicate, not an error. Duplicate deliveries
from a gateway need no de-duplication here: ingest writes raw objects create-once (a re-delivery
within the hour hits the same key and is not re-written, so no new "Object Created" event), and
a re-delivery landing under a later hour's key carries the same (thing, seq) and so the same
record versions.

Other rejections (a time outside the table's retention, a newer version already stored) are
counted per reason; the request's other records still land.

A raw set object (batched ingest: many messages' batches, cloud/datalake/raw.py) is copied batch by
batch; a set is written create-once under a key that digests its batches, so the same reasoning holds.

A raw object that is not a RawBatch or RawBatchSet (not one gzip member, inflating beyond
MAX_RAW_JSON_BYTES, not the contract, or not the batch(es) its key names) is refused, not retried:
the handler counts and logs it and returns; compaction moves it aside to quarantine with its reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeloop.cloud.datalake.raw import RAW_KEY, RAW_SET_KEY, raw_set_digest
from edgeloop.schemas.common import validation_problems
from edgeloop.schemas.raw_batch import RawBatch

from .data_access import (
    MAX_RECORDS_PER_REQUEST,
    RecordWriter,
    RejectedRecord,
    WriteOutcome,
    read_raw_batch,
    read_raw_set,
)

MEASURE_NAME = "value"
THING_DIMENSION, LINE_DIMENSION, METRIC_DIMENSION = "thing_name", "line_id", "metric"
DEFAULT_WRITE_CONCURRENCY = 4  # requests in flight per invocation
MAX_REJECTED_EXAMPLES = 20  # rejected records kept (and logged) per object, beyond the counts
REQUESTS_PER_WINDOW = 8  # per request in flight: the records built at a time (memory stays flat)


# --- the triggering event ------------------------------------------------------------------------


class _Bucket(BaseModel):
    name: str


class _Object(BaseModel):
    key: str


class _Detail(BaseModel):
    bucket: _Bucket
    object: _Object


class ObjectCreatedEvent(BaseModel):
    """The fields used of an S3 "Object Created" event delivered by EventBridge."""

    model_config = ConfigDict(extra="ignore")

    source: Literal["aws.s3"]
    detail_type: Literal["Object Created"] = Field(alias="detail-type")
    detail: _Detail


def raw_key_from_event(event: dict[str, Any], *, data_bucket: str) -> str:
    """The raw object key an event announces; ValueError names the field and value otherwise."""
    try:
        parsed = ObjectCreatedEvent.model_validate(event)
    except ValidationError as exc:
        problems = validation_problems(exc, missing="is missing")
        raise ValueError(f"not an S3 'Object Created' event: {problems}") from exc
    bucket = parsed.detail.bucket.name
    if bucket != data_bucket:
        raise ValueError(f"detail.bucket.name={bucket!r} is not the data bucket {data_bucket!r}")
    # Keys in S3 notifications are URL-encoded; raw keys never contain '+' or '%', so decoding
    # an unencoded key leaves it unchanged.
    key = unquote_plus(parsed.detail.object.key)
    if not (RAW_KEY.match(key) or RAW_SET_KEY.match(key)):
        raise ValueError(
            f"detail.object.key={key!r} is not a raw object key ({RAW_KEY.pattern} or {RAW_SET_KEY.pattern})"
        )
    return key


# --- records -------------------------------------------------------------------------------------


def record_version(seq: int) -> int:
    return seq + 1


def timestream_records(raw: RawBatch, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
    """One DOUBLE record per landed sample, in the batch's order (samples [start, stop) of it)."""
    samples = raw.samples
    window = slice(start, stop)
    thing = {"Name": THING_DIMENSION, "Value": raw.thing_name}
    line = {"Name": LINE_DIMENSION, "Value": raw.line_id}
    metric_dimensions = [{"Name": METRIC_DIMENSION, "Value": metric} for metric in samples.metrics]
    return [
        {
            "Dimensions": [thing, line, metric_dimensions[metric_index]],
            "MeasureName": MEASURE_NAME,
            "MeasureValue": repr(value),  # the shortest text that reads back as the same float64
            "MeasureValueType": "DOUBLE",
            "Time": str(time_ms),
            "TimeUnit": "MILLISECONDS",
            "Version": record_version(seq),
        }
        for metric_index, time_ms, value, seq in zip(
            samples.metric_index[window], samples.time_ms[window], samples.values[window], raw.seq[window]
        )
    ]


def check_matches_key(raw: RawBatch, key: str) -> None:
    """A raw object's content must be the batch its key names (a mismatch means a corrupt object)."""
    match = RAW_KEY.match(key)
    if match is None:
        raise ValueError(f"key={key!r} is not a raw object key")
    named = (match["thing"], int(match["seq_first"]), int(match["seq_last"]))
    held = (raw.thing_name, raw.seq_first, raw.seq_last)
    if named != held:
        raise ValueError(f"raw object {key!r} holds thing/seq_first/seq_last={held}, its key names {named}")


# --- writing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RejectedSample:
    seq: int
    metric: str
    time_ms: int
    reason: str
    existing_version: int | None


@dataclass
class HotPathResult:
    raw_key: str
    samples: int = 0
    requests: int = 0
    written: int = 0  # ingested (new, or an upsert of the same version)
    duplicates: int = 0  # refused because this very version is already stored
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rejected_examples: list[RejectedSample] = field(default_factory=list)  # the first few
    throttle_retries: int = 0
    refused: str | None = None  # why the raw object was not read (nothing written)


def read_landed_batch(bucket: str, key: str, *, read: Callable[[str, str], RawBatch] = read_raw_batch) -> RawBatch:
    """The raw object at `key`, checked to be the batch its key names; ValueError names the problem."""
    raw = read(bucket, key)
    check_matches_key(raw, key)
    return raw


def read_landed_batches(
    bucket: str, key: str, *, read_set: Callable[[str, str], list[RawBatch]] = read_raw_set
) -> list[RawBatch]:
    """The batches of the raw object at `key`, either layout, checked against the key."""
    match = RAW_SET_KEY.match(key)
    if match is None:
        return [read_landed_batch(bucket, key)]
    batches = read_set(bucket, key)
    held = raw_set_digest(batches)
    if held != match["digest"]:
        raise ValueError(f"raw object {key!r} holds batches whose digest is {held}, its key names {match['digest']}")
    return batches


def merge_results(raw_key: str, results: Sequence[HotPathResult]) -> HotPathResult:
    """One result for a raw object copied batch by batch."""
    merged = HotPathResult(raw_key=raw_key)
    for result in results:
        for name in ("samples", "requests", "written", "duplicates", "rejected", "throttle_retries"):
            setattr(merged, name, getattr(merged, name) + getattr(result, name))
        for reason, count in result.rejected_by_reason.items():
            merged.rejected_by_reason[reason] = merged.rejected_by_reason.get(reason, 0) + count
        merged.rejected_examples.extend(
            result.rejected_examples[: MAX_REJECTED_EXAMPLES - len(merged.rejected_examples)]
        )
    return merged


def copy_raw_object(
    bucket: str,
    key: str,
    *,
    writer: RecordWriter,
    read: Callable[[str, str], RawBatch] = read_raw_batch,
    concurrency: int = DEFAULT_WRITE_CONCURRENCY,
) -> HotPathResult:
    """Read the raw object at `key` and write its samples to Timestream."""
    raw = read_landed_batch(bucket, key, read=read)
    return land_raw_batch(raw, raw_key=key, writer=writer, concurrency=concurrency)


def land_raw_batch(
    raw: RawBatch, *, raw_key: str, writer: RecordWriter, concurrency: int = DEFAULT_WRITE_CONCURRENCY
) -> HotPathResult:
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency} must be at least 1")
    samples = len(raw.seq)
    result = HotPathResult(raw_key=raw_key, samples=samples, requests=-(-samples // MAX_RECORDS_PER_REQUEST))
    reasons: Counter[str] = Counter()
    # Records are built a window at a time: a full batch's 400k record dicts would take ~300 MB.
    window = MAX_RECORDS_PER_REQUEST * REQUESTS_PER_WINDOW * concurrency
    for start in range(0, samples, window):
        records = timestream_records(raw, start, start + window)
        requests = [records[i : i + MAX_RECORDS_PER_REQUEST] for i in range(0, len(records), MAX_RECORDS_PER_REQUEST)]
        outcomes = _write_all(requests, writer, concurrency)
        first = start // MAX_RECORDS_PER_REQUEST
        for number, (request, outcome) in enumerate(zip(requests, outcomes), start=first):
            result.throttle_retries += outcome.throttle_retries
            _count_rejections(raw, number, request, outcome, result, reasons)
    result.rejected = sum(reasons.values())
    result.rejected_by_reason = dict(reasons)
    result.written = result.samples - result.duplicates - result.rejected
    return result


def _count_rejections(
    raw: RawBatch, number: int, request: list[dict], outcome: WriteOutcome, result: HotPathResult, reasons: Counter
) -> None:
    for rejected in outcome.rejected:
        if not 0 <= rejected.index < len(request):
            raise ValueError(f"RejectedRecords.RecordIndex={rejected.index} is outside request {number}")
        record = request[rejected.index]
        if rejected.existing_version == record["Version"]:
            result.duplicates += 1
            continue
        reasons[rejected.reason] += 1
        if len(result.rejected_examples) < MAX_REJECTED_EXAMPLES:
            sample = number * MAX_RECORDS_PER_REQUEST + rejected.index
            result.rejected_examples.append(_rejected_sample(raw, sample, rejected))


def _write_all(requests: Sequence[list[dict]], writer: RecordWriter, concurrency: int) -> list[WriteOutcome]:
    if concurrency == 1 or len(requests) <= 1:
        return [writer.write(request) for request in requests]
    # boto3 clients are thread-safe; Timestream ingests faster with a few requests in flight.
    with ThreadPoolExecutor(max_workers=min(concurrency, len(requests)), thread_name_prefix="timestream") as pool:
        return list(pool.map(writer.write, requests))


def _rejected_sample(raw: RawBatch, sample: int, rejected: RejectedRecord) -> RejectedSample:
    samples = raw.samples
    return RejectedSample(
        seq=raw.seq[sample],
        metric=samples.metrics[samples.metric_index[sample]],
        time_ms=samples.time_ms[sample],
        reason=rejected.reason,
        existing_version=rejected.existing_version,
    )
