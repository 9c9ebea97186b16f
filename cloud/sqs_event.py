"""The Lambda SQS event, the fields edgeloop's queue consumers use (ingest's telemetry batches, the
prediction landing's batches): each record's messageId and body, the IoT rule's event."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SqsRecord(BaseModel):
    """The fields a consumer uses of one record of a Lambda SQS event."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    message_id: str = Field(alias="messageId", min_length=1)
    body: str
    event_source: Literal["aws:sqs"] = Field(alias="eventSource")
    sent_at_ms: int = Field(default=0, ge=0, description="attributes.SentTimestamp: when the rule sent it")

    @classmethod
    def of(cls, record: dict) -> SqsRecord:
        sent = (record.get("attributes") or {}).get("SentTimestamp", 0)
        return cls.model_validate({**record, "sent_at_ms": int(sent) if str(sent).isdigit() else 0})


class SqsEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    records: list[dict] = Field(alias="Records", min_length=1)

    def sqs_records(self) -> list[SqsRecord]:
        return [SqsRecord.of(record) for record in self.records]


def is_sqs_event(event: object) -> bool:
    return isinstance(event, dict) and "Records" in event


__all__ = ["SqsEvent", "SqsRecord", "is_sqs_event"]
