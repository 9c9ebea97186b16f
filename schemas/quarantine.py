"""Why a record was refused; stored beside the refused payload under the quarantine prefix."""

from __future__ import annotations

from pydantic import Field

from .common import Contract, UtcDatetime


class QuarantineReason(Contract):
    field: str = Field(description="dotted path of the offending field, or '<payload>'")
    value: str = Field(description="the offending value, truncated to 200 characters")
    error: str


class QuarantineRecord(Contract):
    source: str = Field(description="where it came from, e.g. the MQTT topic")
    received_at: UtcDatetime
    reasons: list[QuarantineReason] = Field(min_length=1)
    payload_b64: str = Field(description="the refused payload as received, base64-encoded")
