"""Context intake and slices: the context function's logic.

Intake (the target of the edgeloop/<thing>/context route): a message is one ContextInterval or a
JSON list of them, all of one line. Bad intervals go to quarantine with field, value and error
while the good ones land; a message whose valid intervals name more than one line lands nothing.
After every change the line's 1-minute slices are rebuilt from all its intervals (the sweep and
quantization: cloud/datalake/context.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
from pydantic import ValidationError

from edgeloop.cloud.datalake.context import (
    context_columns,
    get_context_intervals,
    quantize,
    sub_intervals,
    upsert_context_intervals,
)
from edgeloop.cloud.datalake.quarantine import (
    MessageRefused,
    message_payload,
    quarantine_key,
    quarantine_record,
    topic_thing,
)
from edgeloop.cloud.datalake.rollups import bucket_width_ms
from edgeloop.cloud.line_directory import LineDirectory, line_mismatch
from edgeloop.schemas import ContextInterval, IotRuleEvent, QuarantineReason, names
from edgeloop.schemas.common import IDENTIFIER

from . import data_access

SLICE_RESOLUTION = "1m"  # the slices join 1-minute rollups


@dataclass
class ParsedContext:
    """A context message split into the intervals that land and the reasons for the rest."""

    thing_name: str
    intervals: list[ContextInterval]
    reasons: list[QuarantineReason] = field(default_factory=list)
    refused: int = 0  # intervals refused

    @property
    def line_id(self) -> str | None:
        return self.intervals[0].line_id if self.intervals else None


@dataclass
class SlicesBuilt:
    line_id: str
    intervals: int
    sub_intervals: int
    slices: int  # rows of quantize(): runs of whole 1-minute slices with one context
    minutes: int  # 1-minute slices covered
    key: str


@dataclass
class ContextIntakeResult:
    thing_name: str | None
    line_id: str | None = None
    accepted: int = 0
    refused: int = 0  # intervals refused (a refused message counts all it carried, at least 1)
    quarantine_key: str | None = None
    slices: SlicesBuilt | None = None


def parse_context_message(event: IotRuleEvent) -> ParsedContext:
    """Valid intervals and reasons for the invalid ones; MessageRefused when nothing may land."""
    thing = topic_thing(event.topic, names.context_topic, "context")
    items = _interval_documents(event)
    intervals, reasons, refused = [], [], 0
    for index, item in enumerate(items):
        try:
            intervals.append(ContextInterval.model_validate(item))
        except ValidationError as exc:
            reasons += [_error_reason(index, error) for error in exc.errors()]
            refused += 1
    lines = sorted({i.line_id for i in intervals})
    if len(lines) > 1:
        raise MessageRefused(
            [
                QuarantineReason.of(
                    "line_id", lines, f"a context message carries the intervals of one line, got {len(lines)}"
                )
            ]
        )
    return ParsedContext(thing_name=thing, intervals=intervals, reasons=reasons, refused=refused)


def handle_context_message(bucket: str, event: IotRuleEvent, *, lines: LineDirectory) -> ContextIntakeResult:
    """Land a message's good intervals, quarantine the rest, rebuild the line's slices.

    A gateway may describe only its own line: the IoT registry (`lines`) decides which that is.
    """
    received_at = datetime.fromtimestamp(event.received_at_ms / 1000, tz=UTC)
    try:
        parsed = parse_context_message(event)
        _check_line(parsed, lines)
    except MessageRefused as refused:
        key = _quarantine(bucket, event, received_at, refused.reasons)
        return ContextIntakeResult(thing_name=_thing_or_none(event.topic), refused=1, quarantine_key=key)
    result = ContextIntakeResult(
        thing_name=parsed.thing_name,
        line_id=parsed.line_id,
        accepted=len(parsed.intervals),
        refused=parsed.refused,
    )
    if parsed.reasons:
        result.quarantine_key = _quarantine(bucket, event, received_at, parsed.reasons)
    if parsed.intervals:
        stored = upsert_context_intervals(bucket, parsed.line_id, parsed.intervals)
        result.slices = rebuild_slices(bucket, parsed.line_id, intervals=stored)
    return result


def _check_line(parsed: ParsedContext, lines: LineDirectory) -> None:
    if parsed.line_id is None:
        return  # nothing valid to land; the refused intervals are quarantined with their reasons
    error = line_mismatch(parsed.thing_name, parsed.line_id, lines)
    if error is not None:
        raise MessageRefused([QuarantineReason.of("line_id", parsed.line_id, error)])


def rebuild_slices(bucket: str, line_id: str, *, intervals: list[ContextInterval] | None = None) -> SlicesBuilt:
    """Rebuild a line's 1-minute context slices from every interval stored for it (`intervals`,
    when the caller has just stored them, else read back)."""
    if not isinstance(line_id, str) or not IDENTIFIER.match(line_id):
        raise ValueError(f"line_id={line_id!r} is not a line id ({IDENTIFIER.pattern})")
    if intervals is None:
        intervals = get_context_intervals(bucket, line_id)
    subs = sub_intervals(intervals, line_id)
    slices = quantize(subs, SLICE_RESOLUTION)
    key = data_access.put_slices(bucket, line_id, slices_table(slices))
    width = bucket_width_ms(SLICE_RESOLUTION)
    minutes = int(((slices["slice_end_ms"] - slices["slice_start_ms"]) // width).sum())
    return SlicesBuilt(line_id, len(intervals), len(subs), len(slices), minutes, key)


def slices_schema() -> pa.Schema:
    """quantize()'s columns with pinned types, so a line without context writes typed empty columns."""
    fields = [pa.field("slice_start_ms", pa.int64()), pa.field("slice_end_ms", pa.int64())]
    for column in context_columns():
        fields.append(pa.field(column, pa.float64() if column in ("spec_lower", "spec_upper") else pa.string()))
    return pa.schema(fields)


def slices_table(slices: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(slices, schema=slices_schema(), preserve_index=False)


def _thing_or_none(topic: str) -> str | None:
    try:
        return names.thing_from_topic(topic)
    except ValueError:
        return None


def _interval_documents(event: IotRuleEvent) -> list[Any]:
    payload = message_payload(event)
    try:
        document = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MessageRefused([QuarantineReason.of("<payload>", payload, f"is not JSON: {exc}")]) from exc
    if isinstance(document, dict):
        return [document]
    if not isinstance(document, list):
        raise MessageRefused(
            [
                QuarantineReason.of(
                    "<payload>", document, f"is a JSON {type(document).__name__}, not an interval or a list of them"
                )
            ]
        )
    if not document:
        raise MessageRefused([QuarantineReason.of("<payload>", document, "is an empty list: it carries no interval")])
    return document


def _error_reason(index: int, error: dict) -> QuarantineReason:
    path = f"[{index}]" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    if error["type"] == "missing":
        return QuarantineReason.of(path, None, "is missing")
    return QuarantineReason.of(path, error.get("input"), error["msg"])


def _quarantine(bucket: str, event: IotRuleEvent, received_at: datetime, reasons: list[QuarantineReason]) -> str:
    key = quarantine_key(event, received_at)
    data_access.put_quarantine(bucket, key, quarantine_record(event, received_at, reasons))
    return key
