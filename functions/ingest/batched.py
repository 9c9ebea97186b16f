"""The batched path: IoT rule -> SQS queue -> ingest, one raw object per invocation instead of per message.

The rule's action puts the same IotRuleEvent the direct path receives (names.IotRoute.sql: base64
payload, topic, broker receive time) as the SQS message body; the event source mapping hands ingest
up to a batch of them. Each message is checked by the one validation (logic.check_message); refusals
go to quarantine per message, as on the direct path; every accepted batch lands in ONE RawBatchSet
object (cloud/datalake/raw.py; more only past MAX_SET_SAMPLES samples).

Exactly once, per message:
- a message that could not be handled (a storage or registry error, not a refusal) is reported in
  `batchItemFailures` by its messageId and is not in the set: SQS redelivers it alone, nothing of it
  landed. Quarantine records are written before the set, so a failed one keeps its message out of it;
- if the set's PUT fails, every message in it is reported (the quarantined-only ones are not: done);
- a whole batch delivered again (the function timed out or crashed after its PUT) maps to the same
  set key (raw_set_digest): the conditional create fails and its messages count as duplicates;
- the same batch in two messages (a gateway's QoS 1 re-publish, an SQS duplicate) is landed once per
  invocation; across invocations the copies land in two sets and compaction keeps one per (thing, seq).

Keep this module free of numpy/pandas: it is on the ingest Lambda's cold-start path.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from edgeloop.cloud.datalake.raw import MAX_SET_SAMPLES, raw_set_key
from edgeloop.cloud.line_directory import LineDirectory
from edgeloop.cloud.sqs_event import SqsRecord
from edgeloop.schemas import IotRuleEvent, QuarantineReason, UseCaseConfig, names
from edgeloop.schemas.quarantine import VALUE_PREVIEW_CHARS
from edgeloop.schemas.raw_batch import RawBatchSet

from .data_access import IngestStore
from .logic import CheckedMessage, IngestResult, check_lateness_sla_days, check_message

NOT_A_RULE_EVENT = "<sqs body>"


@dataclass
class BatchIngest:
    """What one invocation did: a result per handled message, and the messages SQS must redeliver."""

    results: dict[str, IngestResult] = field(default_factory=dict)  # by messageId
    failed: dict[str, str] = field(default_factory=dict)  # messageId -> why it was not handled
    raw_keys: list[str] = field(default_factory=list)  # the set objects written (or found: duplicates)

    def response(self) -> dict:
        """The Lambda response the event source mapping reads (FunctionResponseTypes ReportBatchItemFailures)."""
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in self.failed]}


@dataclass(frozen=True)
class _Accepted:
    message_id: str
    checked: CheckedMessage
    quarantine_key: str | None


def ingest_sqs_records(
    records: Sequence[SqsRecord],
    *,
    use_case: UseCaseConfig,
    store: IngestStore,
    lines: LineDirectory,
    lateness_sla_days: int = names.DEFAULT_LATENESS_SLA_DAYS,
) -> BatchIngest:
    check_lateness_sla_days(lateness_sla_days)
    outcome = BatchIngest()
    chunk: list[_Accepted] = []  # landed as soon as the next message would take it past MAX_SET_SAMPLES
    seen: set[tuple[str, int, int]] = set()  # (thing, seq_first, seq_last) landing in this invocation
    for record in records:
        try:
            checked = _check(record, use_case, lines, lateness_sla_days)
            identity = _identity(checked)
            if identity is not None and identity in seen:  # a copy of a batch this invocation lands already
                outcome.results[record.message_id] = checked.result(raw_key=None, created=False, quarantine_key=None)
                continue
            q_key = checked.quarantine(store)
        except Exception as exc:  # storage or registry: SQS redelivers this message
            outcome.failed[record.message_id] = f"{type(exc).__name__}: {exc}"
            continue
        if identity is None:
            outcome.results[record.message_id] = checked.result(raw_key=None, created=False, quarantine_key=q_key)
            continue
        seen.add(identity)
        if chunk and _samples(chunk) + len(checked.landed.seq) > MAX_SET_SAMPLES:
            _land(chunk, store, outcome)  # memory stays within about two sets, whatever the SQS batch holds
            chunk = []
        chunk.append(_Accepted(record.message_id, checked, q_key))
    if chunk:
        _land(chunk, store, outcome)
    return outcome


def _land(chunk: list[_Accepted], store: IngestStore, outcome: BatchIngest) -> None:
    batches = sorted((a.checked.landed for a in chunk), key=lambda b: (b.thing_name, b.seq_first))
    key = raw_set_key(batches)
    try:
        created = store.put_raw_if_absent(key, RawBatchSet(batches=batches).to_gzip_json())
    except Exception as exc:  # nothing of this chunk landed: all of it is redelivered
        for accepted in chunk:
            outcome.failed[accepted.message_id] = f"{type(exc).__name__}: {exc}"
        return
    outcome.raw_keys.append(key)
    for accepted in chunk:
        outcome.results[accepted.message_id] = accepted.checked.result(
            raw_key=key, created=created, quarantine_key=accepted.quarantine_key
        )


def _identity(checked: CheckedMessage) -> tuple[str, int, int] | None:
    landed = checked.landed
    return None if landed is None else (landed.thing_name, landed.seq_first, landed.seq_last)


def _samples(chunk: list[_Accepted]) -> int:
    return sum(len(a.checked.landed.seq) for a in chunk)


def _check(record: SqsRecord, use_case: UseCaseConfig, lines: LineDirectory, lateness_sla_days: int) -> CheckedMessage:
    try:
        event = IotRuleEvent.model_validate_json(record.body)
    except ValidationError as exc:
        # Kept as received under a stand-in event (no topic to name a thing): only a rule or a
        # sender other than the stack's rule can put such a body in the queue.
        stand_in = IotRuleEvent(
            payload_b64=base64.b64encode(record.body.encode()).decode(),
            topic=NOT_A_RULE_EVENT,
            received_at_ms=record.sent_at_ms,
        )
        reason = QuarantineReason.of(
            NOT_A_RULE_EVENT,
            record.body[:VALUE_PREVIEW_CHARS],
            f"is not the IoT rule's message (JSON with payload_b64, topic, received_at_ms): {exc.error_count()} error(s), "
            f"first: {exc.errors()[0]['msg']}",
        )
        return CheckedMessage(stand_in, None, [reason], 0)
    return check_message(event, use_case=use_case, lines=lines, lateness_sla_days=lateness_sla_days)
