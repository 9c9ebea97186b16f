"""A device's message as an IoT rule delivers it (announcement, status report, lifecycle event):
checked, bounded and parsed, and quarantined when refused.

The device registry and status intake both take IoT rule events from a device's own topic. A
message is refused (DeviceMessageRefused, a ValueError) when its topic is not the route's, its
payload passes one of its JsonLimits (schemas/bounded_json.py: size, nesting, counts, string
length, checked on the bytes before parsing), is not a JSON object (NaN, Infinity and data after
the document included) or not the contract, validated strictly (no number or boolean from a
string, no time from a number), or the thing it names is not the thing of its topic. The refusal
names the field and the value, one QuarantineReason per problem; `quarantine_refusal` stores them
with the payload as ingest and the context function do (quarantine/ingest_date=.../).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.quarantine import MessageRefused, quarantine_key, quarantine_record
from edgeloop.schemas import IotRuleEvent, QuarantineReason, names
from edgeloop.schemas.bounded_json import JsonLimits, MessageDecodeError, loads_bounded
from edgeloop.schemas.common import validation_problems

_VALUE_PREVIEW = 200


Message = TypeVar("Message", bound=BaseModel)


class DeviceMessageRefused(MessageRefused):
    """A device message refused: `reasons` field by field (for quarantine); str() says it in one line."""

    def __init__(self, reasons: list[QuarantineReason], message: str | None = None) -> None:
        super().__init__(reasons)
        self.args = (message or "; ".join(f"{r.field}={r.value} {r.error}" for r in reasons),)


def received_rule_event(event: Mapping[str, Any]) -> tuple[IotRuleEvent, datetime]:
    """The IoT rule event a Lambda was invoked with, and when the broker received its message."""
    rule_event = IotRuleEvent.model_validate(event)
    return rule_event, datetime.fromtimestamp(rule_event.received_at_ms / 1000, tz=UTC)


def parse_device_message(
    event: IotRuleEvent, topic_of: Callable[[str], str], contract: type[Message], limits: JsonLimits
) -> Message:
    """The `contract` document a device published on its `topic_of(thing)` topic, within `limits`."""
    topic_thing = thing_of_topic(event.topic, topic_of)
    return validated_message(event, json_payload(event, limits), contract, topic_thing)


def validated_message(
    event: IotRuleEvent, document: dict, contract: type[Message], topic_thing: str | None = None
) -> Message:
    """`document` (from json_payload) as `contract`, validated strictly as JSON; with `topic_thing`,
    its thing_name must be that thing."""
    try:
        # JSON-mode strict: a number must be a JSON number and a time an ISO string ("1.5", true
        # and 1767225600 are refused, not coerced); enum values and ISO times are read as JSON has them.
        message: Any = contract.model_validate_json(json.dumps(document), strict=True)
    except ValidationError as exc:
        problems = validation_problems(exc, missing="is missing", max_value_chars=_VALUE_PREVIEW)
        raise DeviceMessageRefused(validation_reasons(exc), f"not a {contract.__name__}: {problems}") from exc
    if topic_thing is not None and message.thing_name != topic_thing:
        raise DeviceMessageRefused(
            [
                QuarantineReason.of(
                    "thing_name",
                    message.thing_name,
                    f"does not match the thing {topic_thing!r} of topic {event.topic!r}",
                )
            ]
        )
    return message


def validation_reasons(exc: ValidationError) -> list[QuarantineReason]:
    """One reason per validation error: the field's dotted path, its value and the message."""
    reasons = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "<payload>"
        if error["type"] == "missing":
            reasons.append(QuarantineReason.of(field, None, "is missing"))
        else:
            reasons.append(QuarantineReason.of(field, error.get("input"), error["msg"]))
    return reasons


def thing_of_topic(topic: str, expected_topic: Callable[[str], str]) -> str:
    """The thing name of a device topic, checked against the topic the route is for."""
    try:
        thing = names.thing_from_topic(topic)
    except ValueError as exc:
        raise DeviceMessageRefused([QuarantineReason.of("topic", topic, str(exc))], str(exc)) from exc
    if topic != expected_topic(thing):
        raise DeviceMessageRefused([QuarantineReason.of("topic", topic, f"is not {expected_topic(thing)!r}")])
    return thing


def json_payload(event: IotRuleEvent, limits: JsonLimits) -> dict:
    """The payload's JSON object, bounded by `limits` before it is parsed."""
    try:
        payload = event.payload
    except ValueError as exc:
        raise DeviceMessageRefused(
            [QuarantineReason.of("payload_b64", event.payload_b64, f"is not base64: {exc}")],
            f"payload_b64={_preview(event.payload_b64)} is not base64: {exc}",
        ) from exc
    try:
        document = loads_bounded(payload, limits)
    except MessageDecodeError as exc:
        raise DeviceMessageRefused([QuarantineReason.of(exc.field, exc.value, exc.reason)]) from exc
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise DeviceMessageRefused(
            [QuarantineReason.of("<payload>", document, f"is a JSON {kind}, not an object")],
            f"payload is a JSON {kind}, not an object",
        )
    return document


def quarantine_refusal(
    bucket: str | None,
    event: IotRuleEvent,
    received_at: datetime,
    reasons: list[QuarantineReason],
    logger: logging.Logger | Any,
) -> str | None:
    """Keep a refused message with its reasons: in the data bucket's quarantine/ when the function
    has one (EDGELOOP_DATA_BUCKET), else in its log only. The key, or None when only logged."""
    record = quarantine_record(event, received_at, reasons)
    if bucket is None:
        logger.warning("device message refused", extra={"quarantine_record": json.loads(record)})
        return None
    key = quarantine_key(event, received_at)
    s3.put_bytes(bucket, key, record, content_type="application/json")
    return key


def _preview(value) -> str:
    return repr(value)[:_VALUE_PREVIEW]
