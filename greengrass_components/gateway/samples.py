"""A sample on the gateway: a (metric, time_ms, value) triple, and what makes one unstorable.

The buffer refuses what no device could store, counting each refusal under one of the reasons
below; the validator (validation.py) judges the rest against the use case and the stream.
"""

from __future__ import annotations

import math

Sample = tuple[str, int, float]

# Rejection reasons (keys of AppendResult.rejected and BufferStats.rejected_total).
REJECT_MALFORMED = "malformed"  # not a (metric, time_ms, value) triple
REJECT_BAD_METRIC = "bad_metric"  # metric name not a string, empty, or longer than MAX_METRIC_CHARS
REJECT_BAD_TIME = "bad_time"  # time_ms not a non-negative integer
REJECT_NON_NUMERIC = "non_numeric"  # value not an int or float
REJECT_NON_FINITE = "non_finite"  # NaN or +-inf

# Bounds one sample's encoded size, so a single sample always fits a 128 KB payload.
MAX_METRIC_CHARS = 256


def rejection(sample: object) -> str | None:
    """Why a sample cannot be stored, or None when it is fine."""
    if not _is_triple(sample):
        return REJECT_MALFORMED
    metric, time_ms, value = sample
    if not isinstance(metric, str) or not metric or len(metric) > MAX_METRIC_CHARS:
        return REJECT_BAD_METRIC
    if not _is_integer(time_ms) or time_ms < 0:
        return REJECT_BAD_TIME
    return value_rejection(value)


def value_rejection(value: object) -> str | None:
    """Why a value cannot be stored (REJECT_NON_NUMERIC, REJECT_NON_FINITE), or None when it is fine."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return REJECT_NON_NUMERIC
    if not math.isfinite(value):
        return REJECT_NON_FINITE
    return None


def orderable(sample: object) -> tuple[str, int] | None:
    """(metric, time_ms) when the sample is well-formed enough to order; `rejection` judges the rest."""
    if not _is_triple(sample):
        return None
    metric, time_ms, _ = sample
    if not isinstance(metric, str) or not _is_integer(time_ms):
        return None
    return metric, time_ms


def _is_triple(sample: object) -> bool:
    return isinstance(sample, (tuple, list)) and len(sample) == 3


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
