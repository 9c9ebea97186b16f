"""The event an IoT topic rule (or the local bridge playing it) hands to a function."""

from __future__ import annotations

import base64

from pydantic import Field

from .common import Contract


class IotRuleEvent(Contract):
    """Built by `IotRoute.sql` in AWS and by the local bridge, field for field."""

    payload_b64: str = Field(description="the MQTT payload, base64-encoded")
    topic: str
    received_at_ms: int = Field(ge=0, description="broker receive time, ms since the Unix epoch")

    @property
    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64, validate=True)

    @classmethod
    def from_message(cls, topic: str, payload: bytes, received_at_ms: int) -> IotRuleEvent:
        return cls(payload_b64=base64.b64encode(payload).decode(), topic=topic, received_at_ms=received_at_ms)
