"""Quarantine: refused messages, kept with the reasons they were refused.

quarantine/ingest_date=YYYY-MM-DD/<thing>-<received_at_ms>-<digest>.json holds one QuarantineRecord:
the payload as received (so a fixed message can be replayed) and one reason per refused field or
sample. Ingest (telemetry) and the context function (context intervals) write the same layout, so
one reader and one lifecycle rule serve both; the checks both make before reading a message's
content (its topic, its base64 payload) are here too.

No numpy/pandas/pyarrow here: ingest imports this on its cold-start path.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import datetime

from edgeloop.cloud.datalake.raw import RAW_KEY, RAW_SET_KEY
from edgeloop.schemas import IotRuleEvent, QuarantineReason, QuarantineRecord, names


class MessageRefused(ValueError):
    """The whole message goes to quarantine; `reasons` say why, field by field.

    `sample_count`: the telemetry samples it carried (counted as quarantined), 0 when unknown.
    """

    def __init__(self, reasons: list[QuarantineReason], sample_count: int = 0) -> None:
        super().__init__("; ".join(f"{r.field}={r.value}: {r.error}" for r in reasons))
        self.reasons = reasons
        self.sample_count = sample_count


def quarantine_key(event: IotRuleEvent, received_at: datetime) -> str:
    try:
        thing = names.thing_from_topic(event.topic)
    except ValueError:
        thing = "unknown-topic"
    thing = "".join(c if c.isalnum() or c in ":_-" else "_" for c in thing)[:128]
    digest = hashlib.sha256(f"{event.topic}\n{event.payload_b64}".encode()).hexdigest()[:16]
    return f"{names.QUARANTINE_PREFIX}/ingest_date={received_at:%Y-%m-%d}/{thing}-{event.received_at_ms}-{digest}.json"


def quarantine_record(event: IotRuleEvent, received_at: datetime, reasons: list[QuarantineReason]) -> bytes:
    """The stored record: the message as received and why it (or some of its content) was refused."""
    record = QuarantineRecord(
        source=event.topic, received_at=received_at, reasons=reasons, payload_b64=event.payload_b64
    )
    return record.model_dump_json(indent=1).encode()


def topic_thing(topic: str, topic_of: Callable[[str], str], kind: str) -> str:
    """The thing whose `kind` topic (`topic_of(thing)`, e.g. names.telemetry_topic) this is."""
    try:
        thing = names.thing_from_topic(topic)
    except ValueError as exc:
        raise MessageRefused([QuarantineReason.of("topic", topic, str(exc))]) from exc
    if topic != topic_of(thing):
        raise MessageRefused([QuarantineReason.of("topic", topic, f"is not a {kind} topic ({topic_of(thing)})")])
    return thing


def message_payload(event: IotRuleEvent) -> bytes:
    """The message's payload, decoded from the rule's base64."""
    try:
        return event.payload
    except ValueError as exc:
        raise MessageRefused([QuarantineReason.of("payload_b64", event.payload_b64, f"is not base64: {exc}")]) from exc


def raw_quarantine_key(raw_key: str, at: datetime) -> str:
    """Where compaction moves a raw object aside: the same layout, keyed by the raw key's thing."""
    match = RAW_KEY.match(raw_key)
    # A set object (batched ingest) holds many things' batches: named as such, not by one thing.
    thing = match.group("thing") if match else ("raw-set" if RAW_SET_KEY.match(raw_key) else "unknown-raw")
    digest = hashlib.sha256(raw_key.encode()).hexdigest()[:16]
    return f"{names.QUARANTINE_PREFIX}/ingest_date={at:%Y-%m-%d}/{thing}-{int(at.timestamp() * 1000)}-{digest}.json"


def raw_quarantine_record(raw_key: str, body: bytes, at: datetime, reasons: list[QuarantineReason]) -> bytes:
    """A raw object compaction could not convert: its bytes as stored (gzip JSON) and why."""
    record = QuarantineRecord(
        source=raw_key, received_at=at, reasons=reasons, payload_b64=base64.b64encode(body).decode()
    )
    return record.model_dump_json(indent=1).encode()
