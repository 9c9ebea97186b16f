"""A recording's context intervals as the messages replay and backfill publish on the gateway's
context topic (names.context_topic), each within what the context function accepts."""

from __future__ import annotations

from collections.abc import Sequence

from edgeloop.schemas import ContextInterval
from edgeloop.schemas.bounded_json import MAX_CONTEXT_INTERVALS, MAX_CONTEXT_JSON, loads_bounded


def context_payloads(
    intervals: Sequence[ContextInterval],
    *,
    max_intervals: int = MAX_CONTEXT_INTERVALS,
    max_bytes: int = MAX_CONTEXT_JSON.max_bytes,
) -> list[bytes]:
    """JSON lists of intervals for names.context_topic(thing), each within what the context function
    accepts (schemas/bounded_json.py: MAX_CONTEXT_INTERVALS, MAX_CONTEXT_JSON)."""
    return [payload for _, payload in context_messages(intervals, max_intervals=max_intervals, max_bytes=max_bytes)]


def context_messages(
    intervals: Sequence[ContextInterval],
    *,
    max_intervals: int = MAX_CONTEXT_INTERVALS,
    max_bytes: int = MAX_CONTEXT_JSON.max_bytes,
) -> list[tuple[int, bytes]]:
    """(intervals in it, payload) per message, as context_payloads()."""
    if max_intervals < 1:
        raise ValueError(f"max_intervals={max_intervals} must be >= 1")
    messages: list[tuple[int, bytes]] = []
    batch: list[bytes] = []
    size = 2
    for interval in intervals:
        item = interval.model_dump_json().encode()
        if len(item) + 2 > max_bytes:
            raise ValueError(f"context interval {interval.interval_id!r} takes {len(item)} bytes, over {max_bytes}")
        if batch and (len(batch) >= max_intervals or size + len(item) + 1 > max_bytes):
            messages.append((len(batch), b"[" + b",".join(batch) + b"]"))
            batch, size = [], 2
        batch.append(item)
        size += len(item) + 1
    if batch:
        messages.append((len(batch), b"[" + b",".join(batch) + b"]"))
    for _, payload in messages:
        loads_bounded(payload, MAX_CONTEXT_JSON)  # raises if a bound of the context function moved below ours
    return messages


def summary(intervals: Sequence[ContextInterval]) -> dict[str, int]:
    """Intervals per kind, e.g. {"run": 3, "state": 12, "limits": 5}."""
    counts: dict[str, int] = {}
    for interval in intervals:
        counts[interval.kind.value] = counts.get(interval.kind.value, 0) + 1
    return counts
