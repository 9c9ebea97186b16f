"""Context sub-intervals (Mímir III-B): every context kind of a line pre-joined into one timeline.

A line's context intervals (runs, states, shifts, work orders) overlap one another freely. A sweep
over all their boundaries cuts the timeline into sub-intervals, the longest periods in which the
active interval of every kind stays the same, so metrics join one table instead of one window join
per kind.

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

Intake (the context function, target of the edgeloop/<thing>/context route): a message is one
ContextInterval or a JSON list of them, all of one line. Bad intervals go to quarantine with
field, value and error while the good ones land; a message whose valid intervals name more than
one line lands nothing. After every change the line's slices are rebuilt from all its intervals.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import ValidationError

from edgeloop.cloud.line_directory import LineDirectory, line_mismatch
from edgeloop.functions.ingest.logic import quarantine_key
from edgeloop.functions.rollups.logic import bucket_width_ms
from edgeloop.schemas import (
    ActiveContext,
    ContextInterval,
    ContextKind,
    IotRuleEvent,
    QuarantineReason,
    QuarantineRecord,
    SubInterval,
    names,
)

from . import data_access

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
    run = current.get(ContextKind.RUN)
    return SubInterval(
        line_id=line_id,
        start=start,
        end=end,
        contexts={kind: ActiveContext(interval_id=i.interval_id, value=i.value) for kind, i in current.items()},
        spec=run.spec if run is not None else None,
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


# --- intake: the context function -----------------------------------------------------------------

SLICE_RESOLUTION = "1m"  # the slices join 1-minute rollups
_LINE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ContextRefused(ValueError):
    """The whole message is refused; `reasons` say why, field by field."""

    def __init__(self, reasons: list[QuarantineReason]) -> None:
        super().__init__("; ".join(f"{r.field}={r.value}: {r.error}" for r in reasons))
        self.reasons = reasons


@dataclass
class ParsedContext:
    """A context message split into the intervals that land and the reasons for the rest."""

    thing_name: str
    intervals: list[ContextInterval]
    reasons: list[QuarantineReason] = field(default_factory=list)
    refused: int = 0  # intervals refused

    @property
    def line_id(self) -> str | None:
        return self.intervals[0].line_id if self.intervals else None


@dataclass
class SlicesBuilt:
    line_id: str
    intervals: int
    sub_intervals: int
    slices: int  # rows of quantize(): runs of whole 1-minute slices with one context
    minutes: int  # 1-minute slices covered
    key: str


@dataclass
class ContextIntakeResult:
    thing_name: str | None
    line_id: str | None = None
    accepted: int = 0
    refused: int = 0  # intervals refused (a refused message counts all it carried, at least 1)
    quarantine_key: str | None = None
    slices: SlicesBuilt | None = None


def parse_context_message(event: IotRuleEvent) -> ParsedContext:
    """Valid intervals and reasons for the invalid ones; ContextRefused when nothing may land."""
    thing = _context_thing(event.topic)
    items = _interval_documents(event)
    intervals, reasons, refused = [], [], 0
    for index, item in enumerate(items):
        try:
            intervals.append(ContextInterval.model_validate(item))
        except ValidationError as exc:
            reasons += [_error_reason(index, error) for error in exc.errors()]
            refused += 1
    lines = sorted({i.line_id for i in intervals})
    if len(lines) > 1:
        raise ContextRefused(
            [
                QuarantineReason.of(
                    "line_id", lines, f"a context message carries the intervals of one line, got {len(lines)}"
                )
            ]
        )
    return ParsedContext(thing_name=thing, intervals=intervals, reasons=reasons, refused=refused)


def handle_context_message(bucket: str, event: IotRuleEvent, *, lines: LineDirectory) -> ContextIntakeResult:
    """Land a message's good intervals, quarantine the rest, rebuild the line's slices.

    A gateway may describe only its own line: the IoT registry (`lines`) decides which that is.
    """
    received_at = datetime.fromtimestamp(event.received_at_ms / 1000, tz=UTC)
    try:
        parsed = parse_context_message(event)
        _check_line(parsed, lines)
    except ContextRefused as refused:
        key = _quarantine(bucket, event, received_at, refused.reasons)
        return ContextIntakeResult(thing_name=_thing_or_none(event.topic), refused=1, quarantine_key=key)
    result = ContextIntakeResult(
        thing_name=parsed.thing_name,
        line_id=parsed.line_id,
        accepted=len(parsed.intervals),
        refused=parsed.refused,
    )
    if parsed.reasons:
        result.quarantine_key = _quarantine(bucket, event, received_at, parsed.reasons)
    if parsed.intervals:
        stored = data_access.store_intervals(bucket, parsed.line_id, parsed.intervals)
        result.slices = rebuild_slices(bucket, parsed.line_id, intervals=stored)
    return result


def _check_line(parsed: ParsedContext, lines: LineDirectory) -> None:
    if parsed.line_id is None:
        return  # nothing valid to land; the refused intervals are quarantined with their reasons
    error = line_mismatch(parsed.thing_name, parsed.line_id, lines)
    if error is not None:
        raise ContextRefused([QuarantineReason.of("line_id", parsed.line_id, error)])


def rebuild_slices(bucket: str, line_id: str, *, intervals: list[ContextInterval] | None = None) -> SlicesBuilt:
    """Rebuild a line's 1-minute context slices from every interval stored for it (`intervals`,
    when the caller has just stored them, else read back)."""
    if not isinstance(line_id, str) or not _LINE_ID.match(line_id):
        raise ValueError(f"line_id={line_id!r} is not a line id ({_LINE_ID.pattern})")
    if intervals is None:
        intervals = data_access.stored_intervals(bucket, line_id)
    subs = sub_intervals(intervals, line_id)
    slices = quantize(subs, SLICE_RESOLUTION)
    key = data_access.put_slices(bucket, line_id, slices_table(slices))
    width = bucket_width_ms(SLICE_RESOLUTION)
    minutes = int(((slices["slice_end_ms"] - slices["slice_start_ms"]) // width).sum())
    return SlicesBuilt(line_id, len(intervals), len(subs), len(slices), minutes, key)


def slices_schema() -> pa.Schema:
    """quantize()'s columns with pinned types, so a line without context writes typed empty columns."""
    fields = [pa.field("slice_start_ms", pa.int64()), pa.field("slice_end_ms", pa.int64())]
    for column in context_columns():
        fields.append(pa.field(column, pa.float64() if column in ("spec_lower", "spec_upper") else pa.string()))
    return pa.schema(fields)


def slices_table(slices: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(slices, schema=slices_schema(), preserve_index=False)


def _context_thing(topic: str) -> str:
    try:
        thing = names.thing_from_topic(topic)
    except ValueError as exc:
        raise ContextRefused([QuarantineReason.of("topic", topic, str(exc))]) from exc
    if topic != names.context_topic(thing):
        raise ContextRefused(
            [QuarantineReason.of("topic", topic, f"is not a context topic ({names.context_topic(thing)})")]
        )
    return thing


def _thing_or_none(topic: str) -> str | None:
    try:
        return names.thing_from_topic(topic)
    except ValueError:
        return None


def _interval_documents(event: IotRuleEvent) -> list[Any]:
    try:
        payload = event.payload
    except ValueError as exc:
        raise ContextRefused([QuarantineReason.of("payload_b64", event.payload_b64, f"is not base64: {exc}")]) from exc
    try:
        document = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContextRefused([QuarantineReason.of("<payload>", payload, f"is not JSON: {exc}")]) from exc
    if isinstance(document, dict):
        return [document]
    if not isinstance(document, list):
        raise ContextRefused(
            [
                QuarantineReason.of(
                    "<payload>", document, f"is a JSON {type(document).__name__}, not an interval or a list of them"
                )
            ]
        )
    if not document:
        raise ContextRefused([QuarantineReason.of("<payload>", document, "is an empty list: it carries no interval")])
    return document


def _error_reason(index: int, error: dict) -> QuarantineReason:
    path = f"[{index}]" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    if error["type"] == "missing":
        return QuarantineReason.of(path, None, "is missing")
    return QuarantineReason.of(path, error.get("input"), error["msg"])


def _quarantine(bucket: str, event: IotRuleEvent, received_at: datetime, reasons: list[QuarantineReason]) -> str:
    record = QuarantineRecord(
        source=event.topic, received_at=received_at, reasons=reasons, payload_b64=event.payload_b64
    )
    # Same layout as ingest's records, so one reader (and one lifecycle rule) serves both.
    key = quarantine_key(event, received_at)
    data_access.put_quarantine(bucket, key, record.model_dump_json(indent=1).encode())
    return key
