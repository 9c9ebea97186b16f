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

Both are bounded before they are parsed (`decode_prediction`, `decode_alert`). Device code imports
this: Python 3.9.
"""

from __future__ import annotations

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


def _decode(payload: bytes, model: Any, limits: JsonLimits, field: str) -> Any:
    document = loads_bounded(payload, limits, field)
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "<document>"
        raise MessageDecodeError(f"{field}.{location}", first.get("input"), first["msg"]) from None


def decode_prediction(payload: bytes) -> PredictionMessage:
    """A PredictionMessage from a device's bytes, bounded by MAX_PREDICTION_JSON (MessageDecodeError)."""
    return _decode(payload, PredictionMessage, MAX_PREDICTION_JSON, "<prediction>")


def decode_alert(payload: bytes) -> AlertEvent:
    """An AlertEvent from a device's bytes, bounded by MAX_ALERT_JSON (MessageDecodeError)."""
    return _decode(payload, AlertEvent, MAX_ALERT_JSON, "<alert>")
