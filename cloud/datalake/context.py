"""A line's context intervals: their storage, and their timeline of sub-intervals (Mímir III-B).

A line's context intervals (runs, states, shifts, work orders, limits) overlap one another freely. A sweep
over all their boundaries cuts the timeline into sub-intervals, the longest periods in which the
active interval of every kind stays the same: every kind pre-joined into one timeline, so metrics
join one table instead of one window join per kind.

Rules, chosen and tested:
- "The same" means the same interval (by interval_id) per kind; a period where no kind is active
  yields no sub-interval, and a kind with no active interval is null in it.
- Intervals of one kind that overlap (a data conflict, e.g. a state typed over another) do not
  fail the line: at any instant the one that started last is active (ties: the greater
  interval_id), and an interval it interrupted is active again once it ends.
- Quantization to slices of a resolution (1-minute slices for joining 1-minute rollups): a slice
  [t, t + w) takes the context of the sub-interval covering its midpoint t + w/2. When at most one
  boundary falls inside a slice this is the majority rule (the side covering more of the slice
  wins; an exact half goes to the later sub-interval). A sub-interval shorter than half a slice
  may thus own no slice; its neighbours then merge if their contexts are equal.

Storage: a line's intervals live at context/line=<line>/intervals.jsonl, one ContextInterval JSON
per line: small, appended to by people and tools, and readable without pandas. The context
function (functions/context) upserts them from gateways' messages; the metric packer and the
dataset step read them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from pydantic import ValidationError

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.rollups import bucket_width_ms
from edgeloop.schemas import ActiveContext, ContextInterval, ContextKind, SubInterval, names

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KINDS = tuple(ContextKind)
SPEC_COLUMNS = ("spec_target_metric", "spec_lower", "spec_upper")


def context_columns() -> list[str]:
    """The columns a contextualized frame gains: <kind>_id, <kind>_value per kind, then spec limits."""
    return [f"{kind.value}_{part}" for kind in KINDS for part in ("id", "value")] + list(SPEC_COLUMNS)


def to_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=int(ms))


# --- sweep ----------------------------------------------------------------------------------------


def sub_intervals(intervals: Iterable[ContextInterval], line_id: str) -> list[SubInterval]:
    """Normalize a line's context intervals into sub-intervals, sorted by start."""
    intervals = list(intervals)
    foreign = [i.interval_id for i in intervals if i.line_id != line_id]
    if foreign:
        raise ValueError(f"intervals {foreign[:5]} do not belong to line_id={line_id!r}")
    # Per kind, intervals in priority order: a later start (then a greater id) wins an overlap.
    ranked = {
        kind: sorted((i for i in intervals if i.kind is kind), key=lambda i: (i.start, i.interval_id)) for kind in KINDS
    }
    next_up = dict.fromkeys(KINDS, 0)
    active: dict[ContextKind, list[tuple[int, ContextInterval]]] = {kind: [] for kind in KINDS}  # heaps by -rank
    boundaries = sorted({i.start for i in intervals} | {i.end for i in intervals})

    pieces: list[tuple[datetime, datetime, dict[ContextKind, ContextInterval]]] = []
    for start, end in zip(boundaries[:-1], boundaries[1:], strict=False):
        current = {}
        for kind in KINDS:
            heap, queue = active[kind], ranked[kind]
            while next_up[kind] < len(queue) and queue[next_up[kind]].start <= start:
                heapq.heappush(heap, (-next_up[kind], queue[next_up[kind]]))
                next_up[kind] += 1
            while heap and heap[0][1].end <= start:  # ended intervals leave once they surface
                heapq.heappop(heap)
            if heap:
                current[kind] = heap[0][1]
        if not current:
            continue
        if pieces and pieces[-1][1] == start and _same(pieces[-1][2], current):
            pieces[-1] = (pieces[-1][0], end, current)
        else:
            pieces.append((start, end, current))
    return [_sub_interval(line_id, start, end, current) for start, end, current in pieces]


def _same(left: dict[ContextKind, ContextInterval], right: dict[ContextKind, ContextInterval]) -> bool:
    return {k: i.interval_id for k, i in left.items()} == {k: i.interval_id for k, i in right.items()}


def _sub_interval(
    line_id: str, start: datetime, end: datetime, current: dict[ContextKind, ContextInterval]
) -> SubInterval:
    limits = current.get(ContextKind.LIMITS) or current.get(ContextKind.RUN)
    return SubInterval(
        line_id=line_id,
        start=start,
        end=end,
        contexts={kind: ActiveContext(interval_id=i.interval_id, value=i.value) for kind, i in current.items()},
        spec=limits.spec if limits is not None else None,
    )


# --- quantization ---------------------------------------------------------------------------------


def quantize(subs: Sequence[SubInterval], resolution: str | int = "1m") -> pd.DataFrame:
    """Sub-intervals on a slice grid: slice_start_ms, slice_end_ms (exclusive) + context columns.

    Each row is a run of whole slices with one context (midpoint rule, see module docstring).
    """
    width = bucket_width_ms(resolution)
    rows = []
    for sub in sorted(subs, key=lambda s: s.start):
        first, stop = _midpoint_slice(to_ms(sub.start), width), _midpoint_slice(to_ms(sub.end), width)
        if first >= stop:
            continue  # shorter than half a slice around any midpoint: owns no slice
        values = _context_values(sub)
        if rows and rows[-1][1] == first * width and rows[-1][2] == values:
            rows[-1] = (rows[-1][0], stop * width, values)
        elif rows and rows[-1][1] > first * width:
            raise ValueError(f"sub-intervals overlap at {sub.start.isoformat()}; build them with sub_intervals()")
        else:
            rows.append((first * width, stop * width, values))
    columns = context_columns()
    frame = pd.DataFrame(
        {
            "slice_start_ms": np.array([r[0] for r in rows], dtype=np.int64),
            "slice_end_ms": np.array([r[1] for r in rows], dtype=np.int64),
            **{column: [r[2][n] for r in rows] for n, column in enumerate(columns)},
        }
    )
    return frame.astype({"spec_lower": "float64", "spec_upper": "float64"})


def _midpoint_slice(ms: int, width: int) -> int:
    """Index of the first slice whose midpoint is at or after `ms`: ceil((2 ms - w) / 2w)."""
    return -((width - 2 * ms) // (2 * width))


def _context_values(sub: SubInterval) -> tuple:
    values = []
    for kind in KINDS:
        active = sub.contexts.get(kind)
        values += [active.interval_id, active.value] if active else [None, None]
    spec = sub.spec
    values += [spec.target_metric, spec.lower, spec.upper] if spec else [None, np.nan, np.nan]
    return tuple(values)


# --- join -----------------------------------------------------------------------------------------


def join_context(rollups: pd.DataFrame, subs: Sequence[SubInterval], resolution: str | int = "1m") -> pd.DataFrame:
    """Rollups of `resolution` with the context of their slice: context_columns() added.

    Rows outside every sub-interval get nulls (NaN spec limits). Vectorised: one searchsorted
    of the bucket starts over the quantized slices.
    """
    width = bucket_width_ms(resolution)
    if "bucket_start_ms" not in rollups.columns:
        raise ValueError(f"rollups lack column bucket_start_ms; have {list(rollups.columns)}")
    starts = rollups["bucket_start_ms"].to_numpy(dtype=np.int64)
    misaligned = np.flatnonzero(starts % width)
    if misaligned.size:
        raise ValueError(f"bucket_start_ms={starts[misaligned[0]]} is not on the {resolution!r} grid of {width} ms")
    slices = quantize(subs, width)
    slice_starts = slices["slice_start_ms"].to_numpy()
    row = np.searchsorted(slice_starts, starts, side="right") - 1
    # A row past a slice's end (a gap) or before the first slice points at a trailing null entry.
    outside = (row < 0) | (starts >= np.append(slices["slice_end_ms"].to_numpy(), 0)[row])
    row[outside] = len(slices)
    added = {}
    for column in context_columns():
        values = slices[column]
        if column in ("spec_lower", "spec_upper"):
            added[column] = np.append(values.to_numpy(dtype=np.float64), np.nan)[row]
        else:
            codes, categories = pd.factorize(values)  # None -> -1
            codes = np.append(codes, -1).astype(np.int16 if len(categories) < 2**15 else np.int32)
            added[column] = pd.Categorical.from_codes(codes[row], categories=categories, validate=False)
    return pd.concat([rollups, pd.DataFrame(added, index=rollups.index)], axis=1)


# --- storage --------------------------------------------------------------------------------------


def context_key(line_id: str) -> str:
    return f"{names.CONTEXT_PREFIX}/line={line_id}/intervals.jsonl"


def put_context_intervals(bucket: str, line_id: str, intervals: Iterable[ContextInterval]) -> str:
    """Replace the line's intervals with `intervals` (sorted by start); returns the object key."""
    intervals = _in_order(intervals)
    for interval in intervals:
        if interval.line_id != line_id:
            raise ValueError(
                f"interval {interval.interval_id!r} has line_id={interval.line_id!r}, "
                f"not the line {line_id!r} it is being stored under"
            )
    body = "".join(interval.model_dump_json() + "\n" for interval in intervals).encode()
    key = context_key(line_id)
    s3.put_bytes(bucket, key, body, content_type="application/x-ndjson")
    return key


def upsert_context_intervals(bucket: str, line_id: str, intervals: Iterable[ContextInterval]) -> list[ContextInterval]:
    """Add intervals, replacing stored ones with the same (kind, interval_id); returns all stored now."""
    merged = {(i.kind, i.interval_id): i for i in get_context_intervals(bucket, line_id)}
    merged.update({(i.kind, i.interval_id): i for i in intervals})
    put_context_intervals(bucket, line_id, merged.values())
    return _in_order(merged.values())


def _in_order(intervals: Iterable[ContextInterval]) -> list[ContextInterval]:
    return sorted(intervals, key=lambda i: (i.start, i.kind.value, i.interval_id))


def get_context_intervals(bucket: str, line_id: str) -> list[ContextInterval]:
    """The line's intervals ([] when none were stored); a malformed line raises naming it."""
    key = context_key(line_id)
    body = s3.get_bytes_or_none(bucket, key)
    if body is None:
        return []
    intervals = []
    # JSON lines end at "\n" only: str.splitlines() would also cut at U+2028 and the like, which JSON
    # leaves unescaped inside strings.
    for number, text in enumerate(body.decode().split("\n"), start=1):
        if not text.strip():
            continue
        try:
            intervals.append(ContextInterval.model_validate_json(text))
        except ValidationError as exc:
            raise ValueError(f"s3://{bucket}/{key} line {number} is not a ContextInterval: {exc}") from exc
    return intervals
