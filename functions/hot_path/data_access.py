"""Where the hot path reads and writes: raw objects in S3, records in a Timestream table."""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError

from edgeloop.cloud import s3
from edgeloop.cloud.aws import client
from edgeloop.schemas.bounded_json import JsonLimits, check_json_shape
from edgeloop.schemas.raw_batch import MAX_SET_BATCHES, RawBatch, RawBatchSet
from edgeloop.schemas.telemetry import RAW_BATCH_JSON

MAX_RECORDS_PER_REQUEST = 100  # WriteRecords' limit
# A raw object inflates to at most this much JSON (schemas/telemetry.py RAW_BATCH_JSON: a RawBatch
# of MAX_BATCH_SAMPLES samples is ~28 MB); its shape is checked before pydantic parses it.
MAX_RAW_JSON_BYTES = RAW_BATCH_JSON.max_bytes
# botocore already retries a throttled request a few times within a second or two (the shared
# client config); these slower retries on top ride out a longer burst before the whole invocation
# fails and Lambda's asynchronous retry re-sends every batch of the object.
MAX_THROTTLE_RETRIES = 5
THROTTLE_BASE_DELAY_S = 0.5
THROTTLE_MAX_DELAY_S = 8.0


@dataclass(frozen=True)
class RejectedRecord:
    """One record Timestream refused; `index` is its position in the request."""

    index: int
    reason: str
    existing_version: int | None = None


@dataclass(frozen=True)
class WriteOutcome:
    """What one WriteRecords request did: every record not in `rejected` was ingested."""

    rejected: tuple[RejectedRecord, ...] = ()
    throttle_retries: int = 0


class RecordWriter(Protocol):
    def write(self, records: Sequence[dict[str, Any]]) -> WriteOutcome: ...


class TimestreamWriter:
    """WriteRecords into one table: partial rejections are reported, throttling is retried."""

    def __init__(
        self,
        database: str,
        table: str,
        *,
        timestream: Any | None = None,
        max_throttle_retries: int = MAX_THROTTLE_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.database = database
        self.table = table
        self._timestream = timestream
        self._max_throttle_retries = max_throttle_retries
        self._sleep = sleep

    @property
    def timestream(self) -> Any:
        return self._timestream if self._timestream is not None else client("timestream-write")

    def write(self, records: Sequence[dict[str, Any]]) -> WriteOutcome:
        if not 1 <= len(records) <= MAX_RECORDS_PER_REQUEST:
            raise ValueError(f"records={len(records)} per request: WriteRecords takes 1..{MAX_RECORDS_PER_REQUEST}")
        retries = 0
        while True:
            try:
                self.timestream.write_records(DatabaseName=self.database, TableName=self.table, Records=list(records))
                return WriteOutcome(throttle_retries=retries)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "RejectedRecordsException":
                    # Timestream ingested the other records of the request; only these are missing.
                    return WriteOutcome(rejected=_rejected_records(exc.response), throttle_retries=retries)
                if code != "ThrottlingException" or retries >= self._max_throttle_retries:
                    raise
            self._sleep(throttle_delay_s(retries))
            retries += 1


def throttle_delay_s(retry: int, *, jitter: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter, so concurrent writers do not retry in step."""
    return min(THROTTLE_MAX_DELAY_S, THROTTLE_BASE_DELAY_S * 2**retry) * (0.5 + jitter() / 2)


def _rejected_records(response: dict[str, Any]) -> tuple[RejectedRecord, ...]:
    return tuple(
        RejectedRecord(
            index=int(item["RecordIndex"]),
            reason=str(item.get("Reason") or "no reason given"),
            existing_version=item.get("ExistingVersion"),
        )
        for item in response.get("RejectedRecords", [])
    )


# A raw set (batched ingest) holds at most as many samples as one batch (raw.MAX_SET_SAMPLES), in up
# to MAX_SET_BATCHES batches, each adding its own arrays, keys and metric names (~8 containers, ~16
# keys, a few dozen names in practice; the byte limit bounds the rest).
RAW_SET_JSON = JsonLimits(
    name="MAX_RAW_SET_JSON",
    max_bytes=RAW_BATCH_JSON.max_bytes,
    max_depth=RAW_BATCH_JSON.max_depth + 2,
    max_containers=8 * MAX_SET_BATCHES + 16,
    max_strings=RAW_BATCH_JSON.max_strings + 128 * MAX_SET_BATCHES,
    max_elements=RAW_BATCH_JSON.max_elements + 128 * MAX_SET_BATCHES,
)


def read_raw_set(bucket: str, key: str) -> list[RawBatch]:
    """The batches of a raw set object (RawBatchSet), bounded as read_raw_batch bounds one batch."""
    text = _read_gzip_json(bucket, key, RAW_SET_JSON)
    try:
        return RawBatchSet.model_validate_json(text).batches
    except ValueError as exc:  # pydantic's errors
        raise ValueError(f"raw object s3://{bucket}/{key} is not a gzip RawBatchSet: {exc}") from exc


def _read_gzip_json(bucket: str, key: str, limits: JsonLimits) -> bytes:
    body = s3.get_bytes_or_none(bucket, key)
    if body is None:
        raise LookupError(
            f"raw object s3://{bucket}/{key} does not exist (expired, or the event is not for this bucket)"
        )
    try:
        text = _gunzip_one_member(body)  # both limits allow MAX_RAW_JSON_BYTES
        check_json_shape(text, "<raw object>", limits)
        return text
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise ValueError(f"raw object s3://{bucket}/{key} is not bounded gzip JSON: {exc}") from exc


def read_raw_batch(bucket: str, key: str) -> RawBatch:
    body = s3.get_bytes_or_none(bucket, key)
    if body is None:
        raise LookupError(
            f"raw object s3://{bucket}/{key} does not exist (expired, or the event is not for this bucket)"
        )
    try:
        text = _gunzip_one_member(body)
        check_json_shape(text, "<raw object>", RAW_BATCH_JSON)
        return RawBatch.model_validate_json(text)
    except (OSError, EOFError, zlib.error, ValueError) as exc:  # ValueError covers pydantic's errors
        raise ValueError(f"raw object s3://{bucket}/{key} is not a gzip RawBatch: {exc}") from exc


def _gunzip_one_member(body: bytes) -> bytes:
    """One gzip member, inflated to at most MAX_RAW_JSON_BYTES, with nothing after it."""
    inflater = zlib.decompressobj(wbits=31)  # 16 + MAX_WBITS: a gzip header and trailer
    text = inflater.decompress(body, MAX_RAW_JSON_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"inflates beyond {MAX_RAW_JSON_BYTES} bytes (MAX_RAW_JSON_BYTES)")
    if not inflater.eof:
        raise ValueError(f"the gzip stream of {len(body)} bytes is truncated")
    if inflater.unused_data:
        raise ValueError(f"{len(inflater.unused_data)} bytes follow the gzip stream")
    return text
