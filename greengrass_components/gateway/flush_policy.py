"""When the gateway sends a batch: the trade between cloud latency and cost per message.

Every IoT Core message is one ingest invocation and one raw object in S3, so a gateway that sends
whatever is pending as soon as it arrives (a 1 Hz adapter: one message a second) pays per second of
data. The policy holds a partial batch back until it is full or its oldest sample has waited
max_latency_s, whichever comes first. Held samples stay in the durable buffer, so a crash while
holding loses nothing.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edgeloop.schemas.telemetry import MAX_PAYLOAD_BYTES

# A batch header (thing, line, metric names) alone takes a few hundred bytes: below this a batch
# would carry almost nothing but its header.
MIN_TARGET_BATCH_BYTES = 1024
DEFAULT_MAX_LATENCY_S = 60.0


class FlushPolicy(BaseModel):
    """Send a batch once it reaches target_batch_bytes or its oldest sample has waited max_latency_s.

    max_latency_s=0 sends whatever is pending at once (the behaviour before the policy existed:
    `FlushPolicy.immediate()`). Backlog older than max_latency_s is always due, so after an outage
    it drains at the full rate the quota buckets allow.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_latency_s: float = Field(
        default=DEFAULT_MAX_LATENCY_S,
        ge=0,
        le=24 * 3600,
        allow_inf_nan=False,
        description="seconds a sample may wait on the gateway for its batch to fill",
    )
    target_batch_bytes: int = Field(
        default=MAX_PAYLOAD_BYTES,
        ge=MIN_TARGET_BATCH_BYTES,
        le=MAX_PAYLOAD_BYTES,
        description="a batch this large (encoded) is sent at once; also the size batches are cut to",
    )

    @classmethod
    def immediate(cls) -> FlushPolicy:
        """Everything pending is due at once: one message per adapter delivery at low rates."""
        return cls(max_latency_s=0.0)

    def due_at(self, appended_at: float | None) -> float:
        """When a batch whose oldest sample was appended at `appended_at` must go (clock time).

        None (the append time is unknown: appended before a restart, or longer ago than the
        buffer keeps append times) means it has waited long enough already; so does everything
        when max_latency_s is 0, whatever the clocks say."""
        if appended_at is None or self.max_latency_s == 0:
            return float("-inf")
        return appended_at + self.max_latency_s
