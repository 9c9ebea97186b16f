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

Quarantine records always carry the payload as received (so a fixed message can be replayed; the
cloud drops re-landed samples by (thing, seq)), and one reason per refused field or sample.

Keep this module free of numpy/pandas: it is on the ingest Lambda's cold-start path.
"""

from __future__ import annotations

import copy
import math
import zlib
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from edgeloop.cloud.datalake.quarantine import (
    MessageRefused,
    message_payload,
    quarantine_key,
    quarantine_record,
    topic_thing,
)
from edgeloop.cloud.datalake.raw import raw_object_key
from edgeloop.cloud.line_directory import LineDirectory, line_mismatch
from edgeloop.schemas import IotRuleEvent, QuarantineReason, TelemetryBatch, UseCaseConfig, names
from edgeloop.schemas.quarantine import VALUE_PREVIEW_CHARS
from edgeloop.schemas.raw_batch import RawBatch
from edgeloop.schemas.telemetry import MAX_PAYLOAD_BYTES, ColumnarSamples, TelemetryDecodeError
from edgeloop.schemas.telemetry_codec import decode_batch_document

from .data_access import IngestStore

FUTURE_TOLERANCE_MS = 5 * 60 * 1000  # gateway clocks may run a little ahead of the broker's
DAY_MS = 86_400_000
SAMPLE_COLUMNS = ("metric_index", "time_ms", "values")
_PLACEHOLDER = {"metric_index": 0, "time_ms": 0, "values": 0.0}


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
    if isinstance(lateness_sla_days, bool) or not isinstance(lateness_sla_days, int) or lateness_sla_days <= 0:
        raise ValueError(f"lateness_sla_days={lateness_sla_days!r} must be a positive whole number of days")
    received_at = datetime.fromtimestamp(event.received_at_ms / 1000, tz=UTC)
    try:
        batch, sample_reasons = _accept(event, use_case, lines, lateness_sla_days)
    except MessageRefused as refused:
        key = quarantine_key(event, received_at)
        store.put_quarantine(key, quarantine_record(event, received_at, refused.reasons))
        return IngestResult(
            landed_samples=0,
            quarantined_samples=refused.sample_count,
            duplicate=False,
            raw_key=None,
            quarantine_key=key,
        )

    landed = _landed_batch(batch, sample_reasons, event.received_at_ms)
    raw_key, duplicate = None, False
    if landed is not None:
        raw_key = raw_object_key(batch, received_at)
        duplicate = not store.put_raw_if_absent(raw_key, landed.to_gzip_json())

    q_key = None
    # A duplicate delivery's refused samples were already quarantined by the first delivery.
    if sample_reasons and not duplicate:
        q_key = quarantine_key(event, received_at)
        reasons = [reason for index in sorted(sample_reasons) for reason in sample_reasons[index]]
        store.put_quarantine(q_key, quarantine_record(event, received_at, reasons))
    return IngestResult(
        landed_samples=0 if landed is None or duplicate else len(landed.seq),
        quarantined_samples=len(sample_reasons),
        duplicate=duplicate,
        raw_key=raw_key,
        quarantine_key=q_key,
    )


# --- validation ----------------------------------------------------------------------------------


def _accept(
    event: IotRuleEvent, use_case: UseCaseConfig, lines: LineDirectory, lateness_sla_days: int
) -> tuple[TelemetryBatch, dict[int, list[QuarantineReason]]]:
    """The valid batch and the reasons per refused sample index; raises MessageRefused."""
    thing = topic_thing(event.topic, names.telemetry_topic, "telemetry")
    document = _decode(event)
    sample_reasons = _screen_samples(document)
    batch = _validate(document, sample_reasons)
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
    _check_samples(batch, use_case, event.received_at_ms, lateness_sla_days, sample_reasons)
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


def _sample_columns(document: dict[str, Any]) -> dict[str, list] | None:
    """The per-sample columns when they are lists of one length, else None (a message-level problem)."""
    samples = document.get("samples")
    if not isinstance(samples, dict):
        return None
    columns = {name: samples.get(name) for name in SAMPLE_COLUMNS}
    if not all(isinstance(column, list) for column in columns.values()):
        return None
    if len({len(column) for column in columns.values()}) != 1:
        return None
    return columns


def _screen_samples(document: dict[str, Any]) -> dict[int, list[QuarantineReason]]:
    """Per-sample faults the schema reports only one at a time (it stops at the first)."""
    reasons: dict[int, list[QuarantineReason]] = {}
    columns = _sample_columns(document)
    if columns is None:
        return reasons
    for i, value in enumerate(columns["values"]):
        if isinstance(value, float) and not math.isfinite(value):
            reasons.setdefault(i, []).append(
                QuarantineReason.of(f"samples.values[{i}]", value, "is not a finite number")
            )
    metrics = document["samples"].get("metrics")
    if isinstance(metrics, list) and metrics:
        for i, index in enumerate(columns["metric_index"]):
            if isinstance(index, int) and not 0 <= index < len(metrics):
                reasons.setdefault(i, []).append(
                    QuarantineReason.of(
                        f"samples.metric_index[{i}]", index, f"is outside metrics (0..{len(metrics) - 1})"
                    )
                )
    return reasons


def _validate(document: dict[str, Any], sample_reasons: dict[int, list[QuarantineReason]]) -> TelemetryBatch:
    """Validate with refused samples replaced by placeholders, so the batch's structure is judged alone.

    Element errors (one sample's value of the wrong type) refuse that sample; any other error
    refuses the message.
    """
    columns = _sample_columns(document)
    for attempt in range(2):
        try:
            # Strict: "1.5" or true is not a value, "0" or true not a metric index (no coercion).
            return TelemetryBatch.model_validate(_with_placeholders(document, sample_reasons), strict=True)
        except ValidationError as exc:
            errors = exc.errors()
            element_errors = [e for e in errors if _sample_element(e["loc"]) is not None]
            if attempt == 0 and columns is not None and len(element_errors) == len(errors):
                for error in element_errors:
                    index = _sample_element(error["loc"])
                    reasons = sample_reasons.setdefault(index, [])
                    reasons.append(QuarantineReason.of(_field_path(error["loc"]), error.get("input"), error["msg"]))
                continue
            reasons = [r for index in sorted(sample_reasons) for r in sample_reasons[index]]
            reasons += [_error_reason(e, document) for e in errors]
            raise MessageRefused(reasons, len(columns["values"]) if columns else 0) from exc
    raise AssertionError("unreachable: the second attempt either returns or raises")


def _with_placeholders(document: dict[str, Any], sample_reasons: dict[int, list[QuarantineReason]]) -> dict:
    columns = _sample_columns(document)
    if not sample_reasons or columns is None:
        return document
    patched = copy.copy(document)
    patched["samples"] = dict(document["samples"])
    for name in SAMPLE_COLUMNS:
        column = list(columns[name])
        for index in sample_reasons:
            column[index] = _PLACEHOLDER[name]
        patched["samples"][name] = column
    return patched


def _sample_element(loc: tuple) -> int | None:
    if len(loc) == 3 and loc[0] == "samples" and loc[1] in SAMPLE_COLUMNS and isinstance(loc[2], int):
        return loc[2]
    return None


def _check_samples(
    batch: TelemetryBatch,
    use_case: UseCaseConfig,
    received_at_ms: int,
    lateness_sla_days: int,
    reasons: dict[int, list[QuarantineReason]],
) -> None:
    samples = batch.samples
    accepted = use_case.accepted_metrics
    unknown = {i for i, name in enumerate(samples.metrics) if name not in accepted}
    latest_ms = received_at_ms + FUTURE_TOLERANCE_MS
    earliest_ms = received_at_ms - lateness_sla_days * DAY_MS
    for i, (metric, time_ms) in enumerate(zip(samples.metric_index, samples.time_ms)):
        if i in reasons:
            continue  # a placeholder stands there; the sample is already refused
        seq = batch.seq_first + i
        if metric in unknown:
            reasons.setdefault(i, []).append(
                QuarantineReason.of(
                    f"samples.metrics[{metric}]",
                    samples.metrics[metric],
                    f"sample seq={seq}: metric is not accepted by use case {use_case.use_case!r}",
                )
            )
        if time_ms > latest_ms:
            reasons.setdefault(i, []).append(
                QuarantineReason.of(
                    f"samples.time_ms[{i}]",
                    time_ms,
                    f"sample seq={seq}: event time is {time_ms - received_at_ms} ms after received_at_ms="
                    f"{received_at_ms} (at most {FUTURE_TOLERANCE_MS} ms allowed)",
                )
            )
        if time_ms < earliest_ms:
            reasons.setdefault(i, []).append(
                QuarantineReason.of(
                    f"samples.time_ms[{i}]",
                    time_ms,
                    f"sample seq={seq}: event time is {received_at_ms - time_ms} ms before received_at_ms="
                    f"{received_at_ms}, beyond the lateness SLA of {lateness_sla_days} days "
                    f"({names.LATENESS_SLA_DAYS_ENV})",
                )
            )


# --- output --------------------------------------------------------------------------------------


def _landed_batch(
    batch: TelemetryBatch, sample_reasons: dict[int, list[QuarantineReason]], received_at_ms: int
) -> RawBatch | None:
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


def _error_reason(error: dict, document: dict[str, Any]) -> QuarantineReason:
    if not error["loc"]:
        # TelemetryBatch's only whole-model check: the sequence range against the sample count.
        span = f"{document.get('seq_first')!r}..{document.get('seq_last')!r}"
        return QuarantineReason.of("seq_first..seq_last", span, error["msg"])
    return QuarantineReason.of(_field_path(error["loc"]), error.get("input"), error["msg"])


def _field_path(loc: tuple) -> str:
    if not loc:
        return "<batch>"
    path = ""
    for part in loc:
        if isinstance(part, int) or part == "":  # an index, or a key no dotted path can show ("")
            path += f"[{part!r}]" if part == "" else f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
