"""What a gateway's model runner says about the future: predictions and violation alerts.

A PredictionMessage is its own message type (names.prediction_topic), keyed by the time the
prediction was made (`made_at`, the end of the scored pack) plus its horizon. It is never a
telemetry sample stamped in the future, so no ingest rule about future samples applies to it and a
gateway whose clock runs fast loses nothing.

An AlertEvent (names.alert_topic, and names.LOCAL_PUBSUB_ALERTS_TOPIC for PLC/HMI adapters) says a
violation alert was raised (debounced: several predictions in a row in a violation class) or
cleared (hysteresis: several in a row in range).

Lead times are differences of two times on the gateway's own clock (predicted time minus the time
the message was sent), so a skewed gateway clock does not skew them.

On the wire to IoT Core, predictions travel as a PredictionBatch (names.prediction_topic): the
predictions one gateway made over a flush interval, each a whole PredictionMessage (the cloud lands
them one per line, as before), so a gateway pays one message per batch, not per pack stride. Alerts
are never batched.

All are bounded before they are parsed (`decode_prediction`, `decode_prediction_batch`,
`decode_alert`). Device code imports this: Python 3.9.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, ValidationError, model_validator

from .bounded_json import JsonLimits, MessageDecodeError, loads_bounded
from .common import Contract, Identifier, SemVer, ThingName, UtcDatetime
from .compat import StrEnum
from .context import SpecLimits
from .device import MAX_ID_CHARS
from .model import Precision
from .training import ViolationClass

VIOLATION_CLASSES = (ViolationClass.LSL, ViolationClass.USL)


class ModelIdentity(Contract):
    """The model that made a prediction: what live accuracy is grouped by."""

    model_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    version: SemVer
    deployment_id: str | None = Field(default=None, max_length=MAX_ID_CHARS, description="None: restored, unknown")
    precision: Precision = Field(description="the tier the gateway runs")
    decision_margin: float = Field(ge=0.0, le=1.0, description="the payload's margin the class was decided with")


class PredictionMessage(Contract):
    """One live prediction of the target's level over [predicted_for, predicted_for + label_window_s)."""

    thing_name: ThingName
    line_id: Identifier
    model: ModelIdentity
    target_metric: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    made_at: UtcDatetime = Field(description="end of the scored pack (event time)")
    horizon_s: int = Field(gt=0)
    label_window_s: int = Field(gt=0)
    predicted_level: float = Field(allow_inf_nan=False)
    violation_class: ViolationClass | None = Field(
        default=None, description="against `spec` at the model's decision margin; None: no spec limits known"
    )
    spec: SpecLimits | None = Field(default=None, description="the limits in force at made_at, if any")
    run_id: str | None = Field(default=None, max_length=128, description="the run interval active at made_at")
    sent_at: UtcDatetime = Field(description="the gateway's clock when it sent this")
    lead_time_s: float = Field(allow_inf_nan=False, description="predicted_for - sent_at")

    @property
    def predicted_for(self) -> datetime:
        return self.made_at + timedelta(seconds=self.horizon_s)

    @model_validator(mode="after")
    def _classified_only_with_limits(self) -> PredictionMessage:
        if (self.violation_class is None) != (self.spec is None):
            raise ValueError(
                f"violation_class={self.violation_class} and spec={self.spec}: a class needs the limits it was decided on"
            )
        return self


class AlertEventKind(StrEnum):
    RAISE = "raise"
    CLEAR = "clear"


class AlertEvent(Contract):
    """A violation alert raised or cleared on a line, with the prediction that decided it."""

    thing_name: ThingName
    line_id: Identifier
    alert_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="the same on its raise and clear")
    event: AlertEventKind
    violation_class: ViolationClass = Field(description="lsl_violation or usl_violation")
    raised_at: UtcDatetime = Field(description="made_at of the prediction that raised the alert")
    at: UtcDatetime = Field(description="made_at of the prediction that decided this event")
    predicted_for: UtcDatetime = Field(description="raise: the earliest violation its predictions foresee")
    lead_time_s: float | None = Field(
        default=None, allow_inf_nan=False, description="raise: predicted_for - sent_at; clear: None"
    )
    consecutive: int = Field(ge=1, description="predictions in a row that decided it")
    predicted_level: float = Field(allow_inf_nan=False, description="of the prediction that decided it")
    spec: SpecLimits
    model: ModelIdentity
    sent_at: UtcDatetime

    @model_validator(mode="after")
    def _violation(self) -> AlertEvent:
        if self.violation_class not in VIOLATION_CLASSES:
            raise ValueError(f"violation_class={self.violation_class.value} is not a violation")
        if (self.lead_time_s is None) != (self.event is AlertEventKind.CLEAR):
            raise ValueError(f"lead_time_s={self.lead_time_s}: a raise carries its lead time, a clear none")
        return self


class BatchMismatch(MessageDecodeError):
    """A prediction of a batch names another thing or line than the batch (raised inside validation,
    where pydantic keeps it as the error's context: `_validate` re-raises it under the message's field)."""


# A batch is cut at this many predictions (30 minutes at the 30 s pack stride) or at
# MAX_PREDICTION_BATCH_BYTES encoded, whichever comes first.
MAX_BATCH_PREDICTIONS = 60


class PredictionBatch(Contract):
    """The predictions one gateway sends in one IoT Core message, oldest first; all of its thing and line."""

    thing_name: ThingName
    line_id: Identifier
    predictions: list[PredictionMessage] = Field(
        min_length=1,
        max_length=MAX_BATCH_PREDICTIONS,
        description="oldest first; on the wire (to_payload) each leaves out thing_name and line_id (the batch's)",
    )

    @model_validator(mode="before")
    @classmethod
    def _predictions_carry_the_batchs_thing_and_line(cls, data: Any) -> Any:
        """On the wire (to_payload) a prediction leaves out the batch's thing and line: it has them."""
        if isinstance(data, dict) and isinstance(data.get("predictions"), list):
            shared = {name: data[name] for name in ("thing_name", "line_id") if name in data}
            data = {**data, "predictions": [{**shared, **p} if isinstance(p, dict) else p for p in data["predictions"]]}
        return data

    @model_validator(mode="after")
    def _one_thing_and_line(self) -> PredictionBatch:
        for index, prediction in enumerate(self.predictions):
            for name in ("thing_name", "line_id"):
                value, batch_value = getattr(prediction, name), getattr(self, name)
                if value != batch_value:
                    raise BatchMismatch(
                        f"predictions[{index}].{name}", value, f"is not the batch's {name} {batch_value!r}"
                    )
        return self

    def to_payload(self) -> bytes:
        """The message's bytes: zlib-compressed JSON, each prediction without the batch's thing and line
        and without its None fields (their defaults). Predictions repeat most of their text, so a full
        batch (~19 KB of JSON) compresses to about one 5 KB IoT Core unit (billed per 5 KB)."""
        shared = {"predictions": {"__all__": {"thing_name", "line_id"}}}
        return zlib.compress(self.model_dump_json(exclude=shared, exclude_none=True).encode(), ZLIB_LEVEL)


# One flat object with two nested objects (model, spec; the spec repeated nowhere): ~700 bytes.
MAX_PREDICTION_JSON = JsonLimits(
    name="MAX_PREDICTION_JSON",
    max_bytes=16 * 1024,
    max_depth=2,
    max_containers=3,
    max_strings=64,
    max_elements=48,
    max_string_chars=MAX_ID_CHARS,
)
# An alert has the same shape and size: the same limits, under its own name in refusals.
MAX_ALERT_JSON = replace(MAX_PREDICTION_JSON, name="MAX_ALERT_JSON")
# Half of IoT Core's 128 KB per message (bounded_json.MAX_PAYLOAD_BYTES): the gateway cuts a batch
# before this (~90 predictions of ~700 bytes would fit; MAX_BATCH_PREDICTIONS comes first).
MAX_PREDICTION_BATCH_BYTES = 64 * 1024
# The batch object and its list, then each prediction's own limits; a prediction is one level deeper.
MAX_PREDICTION_BATCH_JSON = JsonLimits(
    name="MAX_PREDICTION_BATCH_JSON",
    max_bytes=MAX_PREDICTION_BATCH_BYTES,
    max_depth=MAX_PREDICTION_JSON.max_depth + 2,
    max_containers=2 + MAX_BATCH_PREDICTIONS * MAX_PREDICTION_JSON.max_containers,
    max_strings=8 + MAX_BATCH_PREDICTIONS * MAX_PREDICTION_JSON.max_strings,
    max_elements=4 + MAX_BATCH_PREDICTIONS * MAX_PREDICTION_JSON.max_elements,
    max_string_chars=MAX_ID_CHARS,
)


def _decode(payload: bytes, model: Any, limits: JsonLimits, field: str) -> Any:
    return _validate(loads_bounded(payload, limits, field), model, field)


def _validate(document: Any, model: Any, field: str) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        mismatch = (first.get("ctx") or {}).get("error")
        if isinstance(mismatch, BatchMismatch):
            raise MessageDecodeError(f"{field}.{mismatch.field}", mismatch.value, mismatch.reason) from None
        location = _location(first["loc"]) or "<document>"
        raise MessageDecodeError(f"{field}.{location}", first.get("input"), first["msg"]) from None


def _location(loc: tuple) -> str:
    """pydantic's ("predictions", 3, "spec", "upper") as predictions[3].spec.upper."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def decode_prediction(payload: bytes) -> PredictionMessage:
    """A PredictionMessage from a device's bytes, bounded by MAX_PREDICTION_JSON (MessageDecodeError)."""
    return _decode(payload, PredictionMessage, MAX_PREDICTION_JSON, "<prediction>")


ZLIB_LEVEL = 6
ZLIB_FIRST_BYTE = b"\x78"  # a zlib stream's first byte (deflate, 32 KB window); JSON text never starts so


def _json_text(payload: bytes, field: str) -> bytes:
    """A batch's JSON text: the payload itself, or its one zlib stream inflated to at most
    MAX_PREDICTION_BATCH_BYTES (a few KB may inflate to gigabytes), with nothing after it."""
    if payload[:1] != ZLIB_FIRST_BYTE:
        return payload
    limit = MAX_PREDICTION_BATCH_JSON.max_bytes
    label = MAX_PREDICTION_BATCH_JSON.label("BYTES")
    if len(payload) > limit:
        raise MessageDecodeError(field, f"{len(payload)} zlib bytes", f"exceed {limit} bytes ({label})")
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(payload, limit + 1)
    except zlib.error as exc:
        raise MessageDecodeError(field, payload[:32], f"is not a zlib stream: {exc}") from None
    if len(text) > limit:
        raise MessageDecodeError(field, f"{len(payload)} zlib bytes", f"inflate beyond {limit} bytes ({label})")
    if not inflater.eof or inflater.unused_data:
        raise MessageDecodeError(field, payload[:32], "is not exactly one complete zlib stream")
    return text


def decode_prediction_batch(payload: bytes) -> PredictionBatch:
    """A PredictionBatch from a device's bytes (zlib-compressed, as to_payload sends it, or plain JSON),
    bounded by MAX_PREDICTION_BATCH_JSON (MessageDecodeError naming e.g.
    <prediction_batch>.predictions[3].predicted_level)."""
    field = "<prediction_batch>"
    return _decode(_json_text(payload, field), PredictionBatch, MAX_PREDICTION_BATCH_JSON, field)


def decode_prediction_payload(payload: bytes) -> PredictionBatch:
    """What a gateway sends on names.prediction_topic: a PredictionBatch, or one PredictionMessage (a
    ModelRunner from before batching, still running while a rollout reaches its gateway) as a batch of one.
    A single message is held to its own limits, MAX_PREDICTION_JSON."""
    text = _json_text(payload, "<prediction_batch>")
    document = loads_bounded(text, MAX_PREDICTION_BATCH_JSON, "<prediction_batch>")
    if isinstance(document, dict) and "predictions" not in document:
        message = decode_prediction(text)
        return PredictionBatch(thing_name=message.thing_name, line_id=message.line_id, predictions=[message])
    return _validate(document, PredictionBatch, "<prediction_batch>")


def decode_alert(payload: bytes) -> AlertEvent:
    """An AlertEvent from a device's bytes, bounded by MAX_ALERT_JSON (MessageDecodeError)."""
    return _decode(payload, AlertEvent, MAX_ALERT_JSON, "<alert>")
