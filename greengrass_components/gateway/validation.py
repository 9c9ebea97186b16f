"""Gateway-side input checks that need the use case or the stream's history, before the buffer.

The buffer already refuses what no device could store (malformed triples, bad metric names or
times, non-numeric, NaN and infinite values); the validator adds what only a gateway that knows
its use case and remembers the stream can judge:
- unknown_metric: the metric is not one the use case accepts (its metrics + the prediction metric);
- out_of_order: the time is earlier than the last accepted sample of that metric;
- duplicate_time: the time equals the last accepted sample of that metric.

Call order is validator, then buffer (`append_validated`): a sample refused by either gets exactly
one reason, and the good samples of the same call are stored. The ordering memory lives in this
process; a restarted gateway starts it afresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeloop.schemas.use_case import UseCaseConfig

from .samples import orderable, value_rejection

log = logging.getLogger(__name__)

REJECT_UNKNOWN_METRIC = "unknown_metric"
REJECT_OUT_OF_ORDER = "out_of_order"
REJECT_DUPLICATE_TIME = "duplicate_time"
VALIDATOR_REASONS = (REJECT_UNKNOWN_METRIC, REJECT_OUT_OF_ORDER, REJECT_DUPLICATE_TIME)

# At most one WARNING line per reason in this many seconds; the line counts what it stands for.
DEFAULT_WARN_INTERVAL_S = 60.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class ValidationResult:
    passed: list  # samples for the buffer, in their original order
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class IntakeResult:
    """One call through validator and buffer: every offered sample is accepted or has one reason."""

    offered: int
    accepted: int
    rejected: dict[str, int]
    dropped: int = 0  # oldest pending samples the buffer's disk cap deleted during the call


class _RateLimitedWarning:
    """One WARNING per reason per interval, naming the first sample and how many it stands for."""

    def __init__(self, interval_s: float, clock: Clock, logger: logging.Logger, source: str) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._log = logger
        self._source = source
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, reason: str, sample: Sequence[Any], detail: str) -> None:
        now = self._clock()
        last = self._last_logged.get(reason)
        if last is not None and now - last < self.interval_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        suppressed = self._suppressed.pop(reason, 0)
        self._last_logged[reason] = now
        metric, time_ms, value = sample
        more = f" (+{suppressed} more {reason} since the last report)" if suppressed else ""
        self._log.warning(
            "%srejected sample metric=%r time_ms=%r value=%r: %s (%s)%s",
            self._source,
            metric,
            time_ms,
            value,
            reason,
            detail,
            more,
        )


class SampleValidator:
    """Rejects unknown metrics, out-of-order and duplicate timestamps; counts every reason."""

    def __init__(
        self,
        use_case: UseCaseConfig,
        *,
        source: str = "",
        warn_interval_s: float = DEFAULT_WARN_INTERVAL_S,
        clock: Clock = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        if warn_interval_s < 0:
            raise ValueError(f"warn_interval_s={warn_interval_s} must be >= 0")
        self.use_case = use_case.use_case
        self.accepted_metrics = frozenset(use_case.accepted_metrics)
        self.rejected_total: dict[str, int] = {}
        self.passed_total = 0
        self._last_time: dict[str, int] = {}
        self._warnings = _RateLimitedWarning(warn_interval_s, clock, logger, f"{source}: " if source else "")

    def last_time_ms(self, metric: str) -> int | None:
        """Time of the last accepted sample of `metric`, if any."""
        return self._last_time.get(metric)

    def check(self, samples: Iterable[Any]) -> ValidationResult:
        passed = []
        rejected: dict[str, int] = {}
        for sample in samples:
            reason = self._reason(sample)
            if reason is None:
                passed.append(sample)
            else:
                rejected[reason] = rejected.get(reason, 0) + 1
        self.passed_total += len(passed)
        for reason, count in rejected.items():
            self.rejected_total[reason] = self.rejected_total.get(reason, 0) + count
        return ValidationResult(passed=passed, rejected=rejected)

    def _reason(self, sample: Any) -> str | None:
        key = orderable(sample)
        if key is None:
            return None  # malformed: the buffer names the reason
        metric, time_ms = key
        if metric not in self.accepted_metrics:
            self._warnings.report(
                REJECT_UNKNOWN_METRIC, sample, f"use case {self.use_case!r} accepts {sorted(self.accepted_metrics)}"
            )
            return REJECT_UNKNOWN_METRIC
        last = self._last_time.get(metric)
        if last is not None and time_ms <= last:
            reason = REJECT_DUPLICATE_TIME if time_ms == last else REJECT_OUT_OF_ORDER
            self._warnings.report(reason, sample, f"last accepted time_ms of {metric!r} is {last}")
            return reason
        # Only samples the buffer will store move a metric's clock: a NaN at t must not make a good
        # reading at t look like a duplicate. The buffer counts the NaN itself.
        if value_rejection(sample[2]) is None:
            self._last_time[metric] = time_ms
        return None


def merge_counts(*counts: dict[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in counts:
        for reason, count in part.items():
            merged[reason] = merged.get(reason, 0) + count
    return merged


def append_validated(validator: SampleValidator, buffer: Any, samples: Sequence[Any]) -> IntakeResult:
    """Validator, then buffer.append: the good samples of the call are stored, each bad one counted once."""
    checked = validator.check(samples)
    stored = buffer.append(checked.passed)
    return IntakeResult(
        offered=len(samples),
        accepted=stored.accepted,
        rejected=merge_counts(checked.rejected, stored.rejected),
        dropped=stored.dropped,
    )
