"""Context intake and slices: the context function's logic.

Intake (the target of the edgeloop/<thing>/context route): a message is one ContextInterval or a
JSON list of at most MAX_CONTEXT_INTERVALS of them, all of one line. The payload is bounded before
it is parsed (schemas/bounded_json.py MAX_CONTEXT_JSON: 128 KB, nesting, counts, string length);
a payload past a bound, not JSON (NaN, Infinity and data after the document included) or of the
wrong shape lands nothing. Each interval is then validated strictly (a number is a JSON number, a
time an ISO 8601 string: no "1.5" or true coerced): bad intervals go to quarantine with field,
value and error while the good ones land; a message whose valid intervals name more than one line
lands nothing.
The good intervals are stored as `edgeloop backfill` stores a recording's
(cloud/datalake/context_store.py): upserted, then the line's 1-minute slices rebuilt from all its
intervals (the sweep and quantization: cloud/datalake/context.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from edgeloop.cloud.datalake.context_store import SlicesBuilt, store_context_intervals, strict_interval
from edgeloop.cloud.datalake.quarantine import (
    MessageRefused,
    message_payload,
    quarantine_key,
    quarantine_record,
    topic_thing,
)
from edgeloop.cloud.line_directory import LineDirectory, line_mismatch
from edgeloop.schemas import ContextInterval, IotRuleEvent, QuarantineReason, names
from edgeloop.schemas.bounded_json import MAX_CONTEXT_INTERVALS, MAX_CONTEXT_JSON, MessageDecodeError, loads_bounded

from . import data_access


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
            intervals.append(strict_interval(item))
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
        result.slices = store_context_intervals(bucket, parsed.line_id, parsed.intervals)
    return result


def _check_line(parsed: ParsedContext, lines: LineDirectory) -> None:
    if parsed.line_id is None:
        return  # nothing valid to land; the refused intervals are quarantined with their reasons
    error = line_mismatch(parsed.thing_name, parsed.line_id, lines)
    if error is not None:
        raise MessageRefused([QuarantineReason.of("line_id", parsed.line_id, error)])


def _thing_or_none(topic: str) -> str | None:
    try:
        return names.thing_from_topic(topic)
    except ValueError:
        return None


def _interval_documents(event: IotRuleEvent) -> list[Any]:
    payload = message_payload(event)
    try:
        document = loads_bounded(payload, MAX_CONTEXT_JSON)
    except MessageDecodeError as exc:
        raise MessageRefused([QuarantineReason.of(exc.field, exc.value, exc.reason)]) from exc
    if isinstance(document, list) and len(document) > MAX_CONTEXT_INTERVALS:
        raise MessageRefused(
            [
                QuarantineReason.of(
                    "<payload>",
                    f"{len(document)} intervals",
                    f"exceed {MAX_CONTEXT_INTERVALS} per message (MAX_CONTEXT_INTERVALS)",
                )
            ]
        )
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
