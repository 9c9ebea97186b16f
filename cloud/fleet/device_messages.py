"""A device's message as an IoT rule delivers it (announcement, status report): checked and parsed.

The device registry and status intake both take IoT rule events from a device's own topic. A
message is refused (ValueError) when its topic is not the route's, its payload is not a JSON
object or not the contract, or the thing it names is not the thing of its topic; the message
names the field and the value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edgeloop.schemas import IotRuleEvent, names
from edgeloop.schemas.common import validation_problems

_VALUE_PREVIEW = 200


Message = TypeVar("Message", bound=BaseModel)


def received_rule_event(event: Mapping[str, Any]) -> tuple[IotRuleEvent, datetime]:
    """The IoT rule event a Lambda was invoked with, and when the broker received its message."""
    rule_event = IotRuleEvent.model_validate(event)
    return rule_event, datetime.fromtimestamp(rule_event.received_at_ms / 1000, tz=UTC)


def parse_device_message(event: IotRuleEvent, topic_of: Callable[[str], str], contract: type[Message]) -> Message:
    """The `contract` document a device published on its `topic_of(thing)` topic."""
    topic_thing = thing_of_topic(event.topic, topic_of)
    document = json_payload(event)
    try:
        message: Any = contract.model_validate(document)
    except ValidationError as exc:
        raise ValueError(
            f"not a {contract.__name__}: {validation_problems(exc, missing='is missing', max_value_chars=_VALUE_PREVIEW)}"
        ) from exc
    if message.thing_name != topic_thing:
        raise ValueError(
            f"thing_name={message.thing_name!r} does not match the thing {topic_thing!r} of topic {event.topic!r}"
        )
    return message


def thing_of_topic(topic: str, expected_topic: Callable[[str], str]) -> str:
    """The thing name of a device topic, checked against the topic the route is for."""
    thing = names.thing_from_topic(topic)
    if topic != expected_topic(thing):
        raise ValueError(f"topic={topic!r} is not {expected_topic(thing)!r}")
    return thing


def json_payload(event: IotRuleEvent) -> dict:
    try:
        payload = event.payload
    except ValueError as exc:
        raise ValueError(f"payload_b64={_preview(event.payload_b64)} is not base64: {exc}") from exc
    try:
        document = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"payload={_preview(payload)} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"payload is a JSON {type(document).__name__}, not an object")
    return document


def _preview(value) -> str:
    return repr(value)[:_VALUE_PREVIEW]
