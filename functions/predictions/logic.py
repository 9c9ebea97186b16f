"""Prediction and alert landing: the target of edgeloop/<thing>/predictions and edgeloop/<thing>/alerts.

A predictions message is a PredictionBatch (one PredictionMessage from a runner of before batching
is taken as a batch of one: schemas/prediction.py decode_prediction_payload); an alerts message is
one AlertEvent (decode_alert). Each is bounded and validated and must name the thing of its topic
and the line the IoT registry holds for that thing (as ingest and context check theirs); a refused
one goes to quarantine with field, value and reason.

The message is the unit of refusal: a batch with one bad prediction (predictions[i] malformed, or of
another thing or line) goes to quarantine whole, the reason naming predictions[i].<field>. A batch is
what one device sent in one publish; one bad element means its sender (software, clock, identity) is
wrong, so its other elements are no more trustworthy; the quarantine record keeps the payload as
sent, to replay whole once understood; and what lands stays a function of the messages accepted
(no half-landed batch whose other half might land again on a replay).

What is accepted lands as JSON lines, one object per (kind, line, day) of one invocation, one
PredictionMessage per line whatever batches it came in:

    predictions/line=<id>/made_date=YYYY-MM-DD/<digest>.jsonl.gz  (PredictionMessage; made_date of made_at)
    alerts/line=<id>/event_date=YYYY-MM-DD/<digest>.jsonl         (AlertEvent; event_date of `at`)

Predictions are gzip-compressed (kept a year: about a tenth of the storage; cloud/datalake/landed_jsonl.py
reads both these and the plain .jsonl objects landed before). Alerts stay plain: rare and small.
The digest is of the object's lines, so a batch delivered twice lands on the same key.

There is no check against the receive time: a prediction is keyed by when it was made plus its
horizon, so a gateway whose clock runs fast (or a long horizon) lands like any other (issue 17).
The live-accuracy join (predictions x curated measurements, per line and model version) reads these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from edgeloop.cloud.datalake.landed_jsonl import gzip_jsonl
from edgeloop.cloud.datalake.quarantine import (
    MessageRefused,
    message_payload,
    quarantine_key,
    quarantine_record,
    topic_thing,
)
from edgeloop.cloud.line_directory import LineDirectory, line_mismatch
from edgeloop.schemas import IotRuleEvent, QuarantineReason, names
from edgeloop.schemas.bounded_json import MessageDecodeError
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.prediction import AlertEvent, PredictionMessage, decode_alert, decode_prediction_payload

Put = Callable[[str, bytes], None]


@dataclass
class LandingResult:
    predictions: int = 0
    alerts: int = 0
    quarantined: int = 0
    keys: list[str] = field(default_factory=list)  # objects written, landed ones and quarantine records
    landed_alerts: list[AlertEvent] = field(default_factory=list)  # accepted, in landing order (for notices)


def parse_message(event: IotRuleEvent, lines: LineDirectory) -> list[PredictionMessage] | list[AlertEvent]:
    """The predictions (a batch's, in order) or the alert of one rule event; MessageRefused (with
    reasons) when it may not land. A batch's predictions all carry its thing and line (decoded so)."""
    kind = "alert" if event.topic.endswith("/alerts") else "prediction"
    topic_of = names.alert_topic if kind == "alert" else names.prediction_topic
    thing = topic_thing(event.topic, topic_of, kind)
    payload = message_payload(event)
    try:
        message = decode_alert(payload) if kind == "alert" else decode_prediction_payload(payload)
    except MessageDecodeError as exc:
        raise MessageRefused([QuarantineReason.of(exc.field, exc.value, exc.reason)]) from exc
    if message.thing_name != thing:
        reason = f"is not the thing of topic {event.topic} ({thing})"
        raise MessageRefused([QuarantineReason.of("thing_name", message.thing_name, reason)])
    mismatch = line_mismatch(thing, message.line_id, lines)
    if mismatch is not None:
        raise MessageRefused([QuarantineReason.of("line_id", message.line_id, mismatch)])
    return [message] if isinstance(message, AlertEvent) else list(message.predictions)


def landing_key(message: PredictionMessage | AlertEvent, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()[:32]
    if isinstance(message, AlertEvent):
        return f"{names.ALERTS_PREFIX}/line={message.line_id}/event_date={message.at:%Y-%m-%d}/{digest}.jsonl"
    day = f"{message.made_at:%Y-%m-%d}"
    return (
        f"{names.PREDICTIONS_PREFIX}/line={message.line_id}/made_date={day}/{digest}{names.LANDED_PREDICTIONS_SUFFIX}"
    )


def land_messages(events: Iterable[IotRuleEvent], put: Put, lines: LineDirectory) -> LandingResult:
    """Land the accepted messages of `events` (grouped per kind, line and day) and quarantine the rest."""
    result = LandingResult()
    groups: dict[tuple[str, str, str], list[PredictionMessage | AlertEvent]] = {}
    for event in events:
        try:
            parsed = parse_message(event, lines)
        except MessageRefused as exc:
            received_at = datetime.fromtimestamp(event.received_at_ms / 1000, UTC)
            key = quarantine_key(event, received_at)
            put(key, quarantine_record(event, received_at, exc.reasons))
            result.quarantined += 1
            result.keys.append(key)
            continue
        for message in parsed:
            is_alert = isinstance(message, AlertEvent)
            day = (message.at if is_alert else message.made_at).strftime("%Y-%m-%d")
            groups.setdefault(("alert" if is_alert else "prediction", message.line_id, day), []).append(message)
    for (kind, _, _), messages in sorted(groups.items()):
        body = "".join(m.model_dump_json() + "\n" for m in messages).encode()
        key = landing_key(messages[0], body)
        put(key, body if kind == "alert" else gzip_jsonl(body))
        result.keys.append(key)
        if kind == "alert":
            result.alerts += len(messages)
            result.landed_alerts.extend(m for m in messages if isinstance(m, AlertEvent))
        else:
            result.predictions += len(messages)
    return result
