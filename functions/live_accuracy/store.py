"""What live accuracy reads and writes in the data bucket, and the readers `edgeloop monitor` uses.

Reads, per line, only the days a window needs: predictions/line=<id>/made_date=<d>/*.jsonl.gz (and the
plain *.jsonl landed before compression; cloud/datalake/landed_jsonl.py), one PredictionMessage per line; a
line that is not one, or an object that does not decompress, is skipped and counted, never quarantined: the
landing validated it, so it can only be a damaged object) and curated/line=<id>/event_date=<d>/ parts, of which only
the target metric's rows are decoded (a Parquet row filter on one part's compressed bytes at a time), so
memory stays one compressed part plus one line-day of one metric.
Writes monitoring/line=<id>/live_accuracy/window=<YYYY-MM-DDTHH-MM>.json (LiveAccuracyReport; a re-run
overwrites it with the same content) and monitoring/line=<id>/state.json (LiveAccuracyState), written
conditionally on the ETag it was read with, so two rounds never both advance a line.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError
from pydantic import ValidationError

from edgeloop.cloud import s3
from edgeloop.cloud.aws import client
from edgeloop.cloud.datalake.curated import CURATED_SCHEMA, dedupe_and_sort, partition_prefix
from edgeloop.cloud.datalake.landed_jsonl import landed_text
from edgeloop.schemas import names
from edgeloop.schemas.monitoring import LiveAccuracyReport, LiveAccuracyState
from edgeloop.schemas.prediction import PredictionMessage
from edgeloop.schemas.training import ViolationClass

WINDOW_KEY_FORMAT = "%Y-%m-%dT%H-%M"
# S3's answers to a conditional PutObject that lost: 412 (ETag changed or key now exists), 409 (a
# concurrent conditional write in flight), 404 (IfMatch on a key deleted meanwhile).
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409", "404"}
MAX_SKIP_EXAMPLES = 20  # skipped prediction lines described in a round's result (all are counted)
PREDICTION_COLUMNS = (
    "thing_name",
    "model_id",
    "version",
    "made_at_ms",
    "predicted_for_ms",
    "predicted_level",
    "predicted_class",
    "spec_lower",
    "spec_upper",
    "run_id",
)


def monitoring_prefix(line_id: str) -> str:
    return f"{names.MONITORING_PREFIX}/line={line_id}/"


def window_key(line_id: str, window_start: pd.Timestamp) -> str:
    return f"{monitoring_prefix(line_id)}live_accuracy/window={window_start:{WINDOW_KEY_FORMAT}}.json"


def state_key(line_id: str) -> str:
    return f"{monitoring_prefix(line_id)}state.json"


def _child_prefixes(bucket: str, prefix: str) -> list[str]:
    """The "folders" right under `prefix` (a delimiter listing: no object of theirs is listed)."""
    paginator = client("s3").get_paginator("list_objects_v2")
    found = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        found.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
    return sorted(found)


def _values_of(prefixes: list[str], parent: str, name: str) -> list[str]:
    start = f"{parent}{name}="
    return [p[len(start) : -1] for p in prefixes if p.startswith(start) and p.endswith("/")]


def predicted_lines(bucket: str) -> list[str]:
    """Lines with landed predictions."""
    parent = f"{names.PREDICTIONS_PREFIX}/"
    return _values_of(_child_prefixes(bucket, parent), parent, "line")


def made_dates(bucket: str, line_id: str) -> list[str]:
    parent = f"{names.PREDICTIONS_PREFIX}/line={line_id}/"
    return _values_of(_child_prefixes(bucket, parent), parent, "made_date")


@dataclass
class Skipped:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_SKIP_EXAMPLES:
            self.examples.append(f"{where}: {reason}")


def _prediction_row(message: PredictionMessage) -> tuple:
    spec = message.spec
    return (
        message.thing_name,
        message.model.model_id,
        message.model.version,
        int(message.made_at.timestamp() * 1000),
        int(message.predicted_for.timestamp() * 1000),
        message.predicted_level,
        (message.violation_class or ViolationClass.IN_RANGE).value,
        -np.inf if spec is None else spec.lower,
        np.inf if spec is None else spec.upper,
        message.run_id or "",
    )


def predictions_frame(messages: list[PredictionMessage]) -> pd.DataFrame:
    """PREDICTION_COLUMNS of the messages, one row per (thing, model version, made_at): an SQS batch
    regrouped on a retry may land a prediction twice under two keys."""
    frame = pd.DataFrame([_prediction_row(m) for m in messages], columns=list(PREDICTION_COLUMNS))
    frame = frame.drop_duplicates(["thing_name", "model_id", "version", "made_at_ms"], keep="first")
    numeric = ("predicted_level", "spec_lower", "spec_upper")
    return frame.astype({"made_at_ms": "int64", "predicted_for_ms": "int64", **dict.fromkeys(numeric, "float64")})


def read_predictions(bucket: str, line_id: str, made_date: str, skipped: Skipped) -> pd.DataFrame:
    """The line-day's landed predictions (predictions_frame)."""
    messages = []
    prefix = f"{names.PREDICTIONS_PREFIX}/line={line_id}/made_date={made_date}/"
    for key in sorted(s3.list_keys(bucket, prefix)):
        try:
            landed = landed_text(key, s3.get_bytes(bucket, key))
        except ValueError as exc:
            skipped.add(f"s3://{bucket}/{key}", str(exc))
            continue
        # JSON lines end at "\n" only (splitlines() would also cut at U+2028 inside a string)
        for number, text in enumerate(landed.split("\n"), start=1):
            if not text.strip():
                continue
            try:
                message = PredictionMessage.model_validate_json(text)
            except (ValidationError, ValueError) as exc:
                skipped.add(f"s3://{bucket}/{key} line {number}", str(exc).splitlines()[0])
                continue
            if message.line_id != line_id:
                skipped.add(f"s3://{bucket}/{key} line {number}", f"line_id={message.line_id!r} is not {line_id!r}")
                continue
            messages.append(message)
    return predictions_frame(messages)


def read_target(bucket: str, line_id: str, event_date: str, metric: str) -> pd.DataFrame:
    """The line-day's curated samples of `metric` (time_ms, value), de-duplicated like curated, by time."""
    columns = ["thing_name", "metric", "time_ms", "value", "seq", "ingest_time_ms"]
    frames = []
    for key in s3.list_keys(bucket, partition_prefix(line_id, event_date)):
        if not key.endswith(".parquet"):
            continue
        body = io.BytesIO(s3.get_bytes(bucket, key))
        table = pq.read_table(body, columns=columns, filters=[("metric", "==", metric)])
        frames.append(table.cast(pa.schema([CURATED_SCHEMA.field(c) for c in columns])).to_pandas())
    if not frames:
        return pd.DataFrame({"time_ms": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64")})
    rows = dedupe_and_sort(pd.concat(frames, ignore_index=True))
    return rows.sort_values("time_ms", kind="stable")[["time_ms", "value"]].reset_index(drop=True)


def load_state(bucket: str, line_id: str) -> tuple[LiveAccuracyState | None, str | None]:
    """The line's state and the ETag to write it back on (None, None: never scored)."""
    try:
        response = client("s3").get_object(Bucket=bucket, Key=state_key(line_id))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in {"NoSuchKey", "404"}:
            return None, None
        raise
    body = response["Body"].read()
    try:
        return LiveAccuracyState.model_validate_json(body), response["ETag"]
    except ValidationError as exc:
        raise ValueError(f"s3://{bucket}/{state_key(line_id)} is not a LiveAccuracyState: {exc}") from exc


def save_state(bucket: str, state: LiveAccuracyState, etag: str | None) -> bool:
    """Write the state only if it is still the one read (etag; None: only if there is none yet);
    False when another round wrote it first."""
    condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
    try:
        client("s3").put_object(
            Bucket=bucket,
            Key=state_key(state.line_id),
            Body=state.model_dump_json(indent=1).encode(),
            ContentType="application/json",
            **condition,
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] in _LOST_RACE:
            return False
        raise
    return True


def put_report(bucket: str, report: LiveAccuracyReport) -> str:
    key = window_key(report.line_id, pd.Timestamp(report.window_start))
    s3.put_bytes(bucket, key, report.model_dump_json(indent=1).encode(), content_type="application/json")
    return key


def monitored_lines(bucket: str) -> list[str]:
    """Lines live accuracy has written anything for."""
    parent = f"{names.MONITORING_PREFIX}/"
    return _values_of(_child_prefixes(bucket, parent), parent, "line")


def read_line_monitoring(
    bucket: str, line_id: str, *, last: int = 24
) -> tuple[LiveAccuracyState | None, list[LiveAccuracyReport]]:
    """The line's state and its `last` newest window reports, oldest first (for `edgeloop monitor`)."""
    state, _ = load_state(bucket, line_id)
    keys = sorted(k for k in s3.list_keys(bucket, f"{monitoring_prefix(line_id)}live_accuracy/") if k.endswith(".json"))
    reports = [LiveAccuracyReport.model_validate(json.loads(s3.get_bytes(bucket, k))) for k in keys[-last:]]
    return state, reports
