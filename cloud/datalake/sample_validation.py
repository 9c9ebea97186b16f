"""Ingest's validation of telemetry samples, shared by the ingest function and `edgeloop backfill`.

    batch, reasons = validate_samples(document, use_case=..., received_at_ms=..., lateness_sla_days=14)

A decoded batch document (schemas/telemetry.py's format-1 shape) is judged in three steps:
- screening (`_screen_samples`): per-sample faults the schema reports only one at a time (a
  non-finite value, a metric index outside metrics);
- the strict schema (`validate_document`): TelemetryBatch with no coercion ("1.5" or true is no
  value); an element error (one sample's value of the wrong type) refuses that sample, any other
  error the whole document (MessageRefused);
- the per-sample rules (`check_samples`): unknown metrics, an event time too far in the future
  (FUTURE_TOLERANCE_MS) and, unless `lateness_sla_days` is None, older than the lateness SLA.

The ingest function (functions/ingest/logic.py) runs the first two, checks the message's envelope
(the topic's thing, the registry's line), then the third. `edgeloop backfill` (edgeloop/backfill/)
runs all three on chunks of a recording laid out as batch documents, without the lateness SLA (a
recording is old by nature): one definition of what a valid sample is, wherever it comes from. The
per-sample loops run only where a whole-column check in C (min, max, sum) finds something to name,
so a clean chunk of 400 000 samples costs no Python loop (backfill's throughput; ingest's large
batches too).

Refused samples are reasons per sample index (SampleReasons): the first MAX_SAMPLE_REASONS are
described one by one, the rest counted per (field, fault) in one reason each: 400 000 NaNs in one
small message once made a 39 MB quarantine record.

Keep this module free of numpy/pandas: it is on the ingest Lambda's cold-start path.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from edgeloop.cloud.datalake.quarantine import MessageRefused
from edgeloop.schemas import QuarantineReason, TelemetryBatch, UseCaseConfig, names

FUTURE_TOLERANCE_MS = 5 * 60 * 1000  # gateway clocks may run a little ahead of the broker's
DAY_MS = 86_400_000
SAMPLE_COLUMNS = ("metric_index", "time_ms", "values")
MAX_SAMPLE_REASONS = 1000  # per message, described one by one in its quarantine record; the rest counted
_PLACEHOLDER = {"metric_index": 0, "time_ms": 0, "values": 0.0}


class SampleReasons(dict[int, list[QuarantineReason]]):
    """Reasons per refused sample index. Every refused sample is a key (it does not land); the first
    MAX_SAMPLE_REASONS reasons are described (field, value, error), the rest only counted per (field,
    fault), so memory and the quarantine record stay bounded whatever a message holds."""

    def __init__(self) -> None:
        super().__init__()
        self.described = 0
        self.counted: dict[tuple[str, str], int] = {}

    def refuse(self, index: int, field: str, value: Any, fault: str, error: Callable[[], str] | None = None) -> None:
        """Refuse sample `index`: `fault` says what is wrong in general, `error()` (default: fault) for this sample."""
        reasons = self.setdefault(index, [])
        if self.described < MAX_SAMPLE_REASONS:
            self.described += 1
            reasons.append(QuarantineReason.of(field, value, error() if error is not None else fault))
        else:
            key = (field.split("[", 1)[0], fault)
            self.counted[key] = self.counted.get(key, 0) + 1

    def record_reasons(self) -> list[QuarantineReason]:
        """The record's reasons: the described ones in sample order, then one per counted (field, fault)."""
        listed = [reason for index in sorted(self) for reason in self[index]]
        for (field, fault), count in sorted(self.counted.items()):
            listed.append(
                QuarantineReason(
                    field=field,
                    value=f"{count} samples",
                    error=f"{count} more samples refused, not listed one by one (at most {MAX_SAMPLE_REASONS} "
                    f"are): {fault}",
                )
            )
        return listed


def validate_samples(
    document: dict[str, Any],
    *,
    use_case: UseCaseConfig,
    received_at_ms: int,
    lateness_sla_days: int | None,
    describe: Callable[[int], str] | None = None,
) -> tuple[TelemetryBatch, SampleReasons]:
    """Ingest's validation of one decoded batch document, without the message's envelope (topic,
    thing of the topic, the registry's line): what `edgeloop backfill` runs on each chunk of a recording.

    `lateness_sla_days=None` applies no lateness SLA (backfill); `describe(i)` names sample i in
    reasons (default: "sample seq=<seq_first + i>"). Returns the batch (refused samples replaced by
    placeholders) and the reasons per refused sample index; raises MessageRefused when the
    document itself is invalid.
    """
    batch, sample_reasons = validate_document(document)
    check_samples(batch, use_case, received_at_ms, lateness_sla_days, sample_reasons, describe)
    return batch, sample_reasons


def validate_document(document: dict[str, Any]) -> tuple[TelemetryBatch, SampleReasons]:
    """Screening and the strict schema: the batch (refused samples replaced by placeholders) and the
    reasons per refused sample index so far; raises MessageRefused when the document itself is invalid."""
    sample_reasons = _screen_samples(document)
    return _validate(document, sample_reasons), sample_reasons


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


def _screen_samples(document: dict[str, Any]) -> SampleReasons:
    """Per-sample faults the schema reports only one at a time (it stops at the first)."""
    reasons = SampleReasons()
    columns = _sample_columns(document)
    if columns is None:
        return reasons
    if not _all_finite(columns["values"]):
        for i, value in enumerate(columns["values"]):
            if isinstance(value, float) and not math.isfinite(value):
                reasons.refuse(i, f"samples.values[{i}]", value, "is not a finite number")
    metrics = document["samples"].get("metrics")
    if isinstance(metrics, list) and metrics and not _all_within(columns["metric_index"], 0, len(metrics) - 1):
        for i, index in enumerate(columns["metric_index"]):
            if isinstance(index, int) and not 0 <= index < len(metrics):
                reasons.refuse(i, f"samples.metric_index[{i}]", index, f"is outside metrics (0..{len(metrics) - 1})")
    return reasons


def _all_finite(values: list) -> bool:
    """True only if every value is a finite number (one C-level sum); False means: look closer."""
    try:
        return math.isfinite(sum(values))  # NaN or inf anywhere makes the sum non-finite
    except (TypeError, OverflowError):  # text, None, a huge integer: the loop names them
        return False


def _all_within(column: list, low: int | float, high: int | float) -> bool:
    """True only if every element compares within [low, high] (C-level min/max); False: look closer."""
    if not column:
        return True
    try:
        return low <= min(column) and max(column) <= high  # a NaN fails one of the comparisons
    except TypeError:
        return False


def _validate(document: dict[str, Any], sample_reasons: SampleReasons) -> TelemetryBatch:
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
                    sample_reasons.refuse(index, _field_path(error["loc"]), error.get("input"), error["msg"])
                continue
            reasons = sample_reasons.record_reasons()
            reasons += [_error_reason(e, document) for e in errors[:MAX_SAMPLE_REASONS]]
            if len(errors) > MAX_SAMPLE_REASONS:
                more = len(errors) - MAX_SAMPLE_REASONS
                reasons.append(QuarantineReason(field="<batch>", value=f"{more} errors", error="not listed one by one"))
            raise MessageRefused(reasons, len(columns["values"]) if columns else 0) from exc
    raise AssertionError("unreachable: the second attempt either returns or raises")


def _with_placeholders(document: dict[str, Any], sample_reasons: SampleReasons) -> dict:
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


def check_samples(
    batch: TelemetryBatch,
    use_case: UseCaseConfig,
    received_at_ms: int,
    lateness_sla_days: int | None,
    reasons: SampleReasons,
    describe: Callable[[int], str] | None = None,
) -> None:
    """Unknown metrics, event times too far ahead, and (unless lateness_sla_days is None) too old."""
    samples = batch.samples
    accepted = use_case.accepted_metrics
    unknown = {i for i, name in enumerate(samples.metrics) if name not in accepted}
    latest_ms = received_at_ms + FUTURE_TOLERANCE_MS
    earliest_ms = None if lateness_sla_days is None else received_at_ms - lateness_sla_days * DAY_MS
    if (not unknown or unknown.isdisjoint(samples.metric_index)) and _all_within(
        samples.time_ms, -math.inf if earliest_ms is None else earliest_ms, latest_ms
    ):
        return  # no sample (placeholders included) breaks a rule: the loop would add nothing
    sla = f"the lateness SLA of {lateness_sla_days} days ({names.LATENESS_SLA_DAYS_ENV})"
    not_accepted = f"metric is not accepted by use case {use_case.use_case!r}"
    too_late = f"event time is more than {FUTURE_TOLERANCE_MS} ms after received_at_ms={received_at_ms}"
    too_old = f"event time is before received_at_ms={received_at_ms} minus {sla}"

    def sample(i: int) -> str:  # only called for the reasons described one by one (SampleReasons)
        return describe(i) if describe is not None else f"sample seq={batch.seq_first + i}"

    for i, (metric, time_ms) in enumerate(zip(samples.metric_index, samples.time_ms)):
        if i in reasons:
            continue  # a placeholder stands there; the sample is already refused
        if metric in unknown:
            reasons.refuse(
                i,
                f"samples.metrics[{metric}]",
                samples.metrics[metric],
                not_accepted,
                lambda i=i: f"{sample(i)}: {not_accepted}",
            )
        if time_ms > latest_ms:
            reasons.refuse(
                i,
                f"samples.time_ms[{i}]",
                time_ms,
                too_late,
                lambda i=i, t=time_ms: (
                    f"{sample(i)}: event time is {t - received_at_ms} ms after received_at_ms="
                    f"{received_at_ms} (at most {FUTURE_TOLERANCE_MS} ms allowed)"
                ),
            )
        if earliest_ms is not None and time_ms < earliest_ms:
            reasons.refuse(
                i,
                f"samples.time_ms[{i}]",
                time_ms,
                too_old,
                lambda i=i, t=time_ms: (
                    f"{sample(i)}: event time is {received_at_ms - t} ms before received_at_ms="
                    f"{received_at_ms}, beyond {sla}"
                ),
            )


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
