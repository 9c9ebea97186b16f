"""Why a record was refused; stored beside the refused payload under the quarantine prefix."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .common import Contract, UtcDatetime

VALUE_PREVIEW_CHARS = 200


class QuarantineReason(Contract):
    field: str = Field(description="dotted path of the offending field, or '<payload>'")
    value: str = Field(description=f"the offending value, truncated to {VALUE_PREVIEW_CHARS} characters")
    error: str

    @classmethod
    def of(cls, field: str, value: Any, error: str) -> QuarantineReason:
        """A reason showing `value` as a person should see it: repr, bytes as 0x-hex, truncated."""
        shown = f"0x{value.hex()}" if isinstance(value, bytes) else repr(value)
        return cls(field=field, value=shown[:VALUE_PREVIEW_CHARS], error=error)


class QuarantineRecord(Contract):
    source: str = Field(description="where it came from, e.g. the MQTT topic")
    received_at: UtcDatetime
    reasons: list[QuarantineReason] = Field(min_length=1)
    payload_b64: str = Field(description="the refused payload as received, base64-encoded")
