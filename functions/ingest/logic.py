"""Ingest one telemetry message: validate, land good samples in raw/, quarantine the rest with reasons.

Two levels of refusal:
- the message (not base64, not readable in wire format 1 (zlib JSON) or 2 (compact binary),
  over a size limit (the payload over IoT Core's 128 KB; the decoder's, all in schemas/telemetry.py:
  a body inflating beyond MAX_DECODED_BODY_BYTES, more than MAX_BATCH_SAMPLES samples or
  MAX_BATCH_METRICS metrics, JSON nested deeper than MAX_JSON_DEPTH or with more than
  MAX_JSON_ELEMENTS elements), data after the compressed stream, missing or mistyped batch fields
  (types are strict: no number from a string or a boolean), a sequence number outside int64 (the
  curated table's type), a sequence range that does not match the samples, a thing name that differs from the topic's
  thing, a line_id other than the line the IoT registry holds for the thing): nothing lands, the
  whole payload goes to quarantine;
- single samples (a mistyped or non-finite value, e.g. "NaN" or true, a mistyped metric index,
  a time outside int64, an unknown metric, an event time too far in the
  future, or older than the lateness SLA (names.LATENESS_SLA_DAYS_ENV, default 14 days) on
  arrival): only those samples are refused, the rest of the batch lands. Compaction's late/ path
  still catches rows that passed here under a looser SLA (see functions/compaction/logic.py).

The sample-level half (screening, the strict schema, the per-sample rules) lives in
cloud/datalake/sample_validation.py: `edgeloop backfill` runs the same code (`validate_samples`, on
chunks of a recording laid out as batch documents) without the lateness SLA; the message envelope
(topic, payload, registry line), checked here, is not there to check.

Quarantine records always carry the payload as received (so a fixed message can be replayed; the
cloud drops re-landed samples by (thing, seq)), and one reason per refused field or sample, up to
MAX_SAMPLE_REASONS per message; past that, refused samples are counted per (field, fault) in one
reason each (SampleReasons): 400 000 NaNs in one small message once made a 39 MB record.

Keep this module free of numpy/pandas: it is on the ingest Lambda's cold-start path.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgeloop.cloud.datalake.quarantine import (
    MessageRefused,
    message_payload,
    quarantine_key,
    quarantine_record,
    topic_thing,
)
from edgeloop.cloud.datalake.raw import raw_object_key
from edgeloop.cloud.datalake.sample_validation import SampleReasons, check_samples, validate_document
from edgeloop.cloud.line_directory import LineDirectory, line_mismatch
from edgeloop.schemas import IotRuleEvent, QuarantineReason, TelemetryBatch, UseCaseConfig, names
from edgeloop.schemas.quarantine import VALUE_PREVIEW_CHARS
from edgeloop.schemas.raw_batch import RawBatch
from edgeloop.schemas.telemetry import MAX_PAYLOAD_BYTES, ColumnarSamples, TelemetryDecodeError
from edgeloop.schemas.telemetry_codec import decode_batch_document

from .data_access import IngestStore


class IngestResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    landed_samples: int
    quarantined_samples: int
    duplicate: bool
    raw_key: str | None
    quarantine_key: str | None


def ingest_event(
    event: IotRuleEvent,
    *,
    use_case: UseCaseConfig,
    store: IngestStore,
    lines: LineDirectory,
    lateness_sla_days: int = names.DEFAULT_LATENESS_SLA_DAYS,
) -> IngestResult:
    """The direct path: one message, one raw object (keyed by its thing and sequence range)."""
    check_lateness_sla_days(lateness_sla_days)
    checked = check_message(event, use_case=use_case, lines=lines, lateness_sla_days=lateness_sla_days)
    raw_key, created = None, False
    if checked.landed is not None:
        raw_key = raw_object_key(checked.landed, datetime.fromtimestamp(event.received_at_ms / 1000, tz=UTC))
        created = store.put_raw_if_absent(raw_key, checked.landed.to_gzip_json())
    # A duplicate delivery's refused samples were already quarantined by the first delivery.
    q_key = checked.quarantine(store) if created or checked.landed is None else None
    return checked.result(raw_key=raw_key, created=created, quarantine_key=q_key)


def check_lateness_sla_days(lateness_sla_days: int) -> None:
    if isinstance(lateness_sla_days, bool) or not isinstance(lateness_sla_days, int) or lateness_sla_days <= 0:
        raise ValueError(f"lateness_sla_days={lateness_sla_days!r} must be a positive whole number of days")


@dataclass(frozen=True)
class CheckedMessage:
    """One message after validation: what lands (None: nothing) and the reasons for what does not."""

    event: IotRuleEvent
    landed: RawBatch | None
    reasons: list[QuarantineReason]  # empty: nothing refused
    quarantined_samples: int

    def quarantine(self, store: IngestStore) -> str | None:
        """Write the quarantine record (none without reasons); its key derives from the message, so a
        redelivery of the same message rewrites the same record."""
        if not self.reasons:
            return None
        received_at = datetime.fromtimestamp(self.event.received_at_ms / 1000, tz=UTC)
        key = quarantine_key(self.event, received_at)
        store.put_quarantine(key, quarantine_record(self.event, received_at, self.reasons))
        return key

    def result(self, *, raw_key: str | None, created: bool, quarantine_key: str | None) -> IngestResult:
        """`created`: the raw object holding `landed` was written now (False: a duplicate delivery)."""
        return IngestResult(
            landed_samples=len(self.landed.seq) if self.landed is not None and created else 0,
            quarantined_samples=self.quarantined_samples,
            duplicate=self.landed is not None and not created,
            raw_key=raw_key,
            quarantine_key=quarantine_key,
        )


def check_message(
    event: IotRuleEvent, *, use_case: UseCaseConfig, lines: LineDirectory, lateness_sla_days: int
) -> CheckedMessage:
    """THE validation of a telemetry message, for both paths (direct and batched). Registry errors
    propagate: the message was not checked."""
    try:
        batch, sample_reasons = _accept(event, use_case, lines, lateness_sla_days)
    except MessageRefused as refused:
        return CheckedMessage(event, None, refused.reasons, refused.sample_count)
    return CheckedMessage(
        event,
        _landed_batch(batch, sample_reasons, event.received_at_ms),
        sample_reasons.record_reasons() if sample_reasons else [],
        len(sample_reasons),
    )


# --- validation ----------------------------------------------------------------------------------


def _accept(
    event: IotRuleEvent, use_case: UseCaseConfig, lines: LineDirectory, lateness_sla_days: int
) -> tuple[TelemetryBatch, SampleReasons]:
    """The valid batch and the reasons per refused sample index; raises MessageRefused."""
    thing = topic_thing(event.topic, names.telemetry_topic, "telemetry")
    document = _decode(event)
    batch, sample_reasons = validate_document(document)
    if batch.thing_name != thing:
        raise MessageRefused(
            [
                QuarantineReason.of(
                    "thing_name", batch.thing_name, f"does not match the thing {thing!r} of topic {event.topic!r}"
                )
            ],
            len(batch.samples),
        )
    _check_line(batch, lines)
    check_samples(batch, use_case, event.received_at_ms, lateness_sla_days, sample_reasons)
    return batch, sample_reasons


def _check_line(batch: TelemetryBatch, lines: LineDirectory) -> None:
    """The registry, not the gateway, decides which line a thing's data belongs to."""
    error = line_mismatch(batch.thing_name, batch.line_id, lines)
    if error is not None:
        raise MessageRefused([QuarantineReason.of("line_id", batch.line_id, error)], len(batch.samples))


def _decode(event: IotRuleEvent) -> dict[str, Any]:
    payload = message_payload(event)
    try:
        if len(payload) > MAX_PAYLOAD_BYTES:  # only a path around IoT Core can deliver one
            raise TelemetryDecodeError(
                "<payload>", f"{len(payload)} bytes", f"exceeds IoT Core's message limit of {MAX_PAYLOAD_BYTES} bytes"
            )
        return decode_batch_document(payload)  # either wire format, as the format-1 document shape
    except TelemetryDecodeError as exc:
        raise MessageRefused([QuarantineReason.of(exc.field, exc.value, exc.reason)]) from exc
    except ValueError as exc:
        raise MessageRefused([QuarantineReason.of("<payload>", _readable(payload), str(exc))]) from exc


# --- output --------------------------------------------------------------------------------------


def _landed_batch(batch: TelemetryBatch, sample_reasons: SampleReasons, received_at_ms: int) -> RawBatch | None:
    samples = batch.samples
    kept = [i for i in range(len(samples)) if i not in sample_reasons]
    if not kept:
        return None
    return RawBatch(
        thing_name=batch.thing_name,
        line_id=batch.line_id,
        seq_first=batch.seq_first,
        seq_last=batch.seq_last,
        received_at_ms=received_at_ms,
        samples=ColumnarSamples(
            metrics=samples.metrics,
            metric_index=[samples.metric_index[i] for i in kept],
            time_ms=[samples.time_ms[i] for i in kept],
            values=[samples.values[i] for i in kept],
        ),
        seq=[batch.seq_first + i for i in kept],
    )


def _readable(payload: bytes) -> bytes | str:
    """What a person should see of a refused payload: the start of its decompressed text when there is one."""
    try:
        # Bounded: only a preview is shown, and the payload may be a zlib bomb.
        return zlib.decompressobj().decompress(payload, 4 * VALUE_PREVIEW_CHARS).decode("utf-8", errors="replace")
    except zlib.error:
        return payload
