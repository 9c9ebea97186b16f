"""Context intervals of a recording: runs, spec limits and machine states from the mapping's
`context:` block (ContextMapping in replay_mapping.py), for `gateway replay` and `backfill`.

    intervals = recording_context([path], mapping, line_id, use_case)    # read the file(s) and derive
    intervals = context_intervals(frame, time_ms, valid, mapping, line_id, use_case, source=str(path))

Everything is vectorised over the rows (numpy/pandas): a recording may hold millions of them.

- Runs (ContextKind.RUN): one per file (value: `runs.value`, default the file's stem), or one each
  time `runs.column` changes value (empty cells continue the run). Runs are cut in file order; a
  run whose first time lies before the previous run's last time overlaps it: an error.
- Machine states (ContextKind.STATE): per row, the first rule that matches, else `default`; the
  first `changeover_min` minutes after a run change are changeover whatever the rules say; a spell
  shorter than `min_duration_s` merges into the state before it (one flickering reading makes no
  interval).
- Spec limits of the use case's target metric: `fixed` limits ride on the RUN intervals; `setpoint
  ± band` gives a LIMITS interval each time the setpoint (or the run) changes; `run_median ± band`
  gives one LIMITS interval per run, centred on the median of the target over the run's
  productive rows (UseCaseConfig.is_productive_state; every row when the block has no states).

Intervals run from their first row's time to the next interval's first time; the last ends one
sample step (the recording's median spacing) after the last row. Of several recordings that follow
one another, a run (state, limits) going on from one file into the next is one interval. Their ids are deterministic
(<kind>-<line>-<start, UTC ms>), so replaying or backfilling the same file again replaces them.

Every configuration error is a ValueError naming the key, the value and the file, raised before
anything is published.

This module reads the recordings, cuts the runs and assembles the intervals; the parts live beside
it: context_rows.py (rows by column, spans, interval ids), context_states.py (machine states),
context_limits.py (spec limits), context_publishing.py (the messages on the context topic).
Replay's lateness check is in lateness.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from edgeloop.schemas import ContextInterval, ContextKind, UseCaseConfig

from .context_limits import column_limits, fixed_limits, median_limits
from .context_publishing import summary  # re-exported: see __all__
from .context_rows import ContextRows, context_interval, iso, spans, step_ms, value_starts
from .context_states import machine_states, state_intervals
from .recording import parse_times, read_columns
from .replay_mapping import ContextMapping, ReplayMapping, resolve_metric


# --- reading -------------------------------------------------------------------------------------
def context_columns(mapping: ReplayMapping, target_column: str | None = None) -> list[str]:
    """The file columns the context block reads (plus the target's column for run_median limits)."""
    block = mapping.context
    if block is None:
        return []
    used = list(block.columns())
    if block.limits is not None and block.limits.run_median and target_column:
        used.append(target_column)
    return list(dict.fromkeys(used))


def context_settings(mapping: ReplayMapping) -> dict[str, str]:
    """File column -> the `key=value` of the context setting that reads it (read_columns' `named`)."""
    return mapping.context.columns() if mapping.context is not None else {}


def target_column(mapping: ReplayMapping, use_case: UseCaseConfig, line_id: str) -> str | None:
    """The file column mapped to the use case's target metric, if any."""
    for column, entry in mapping.columns.items():
        if resolve_metric(entry, use_case, line_id, f"columns.{column}") == use_case.target_metric:
            return column
    return None


def recording_context(
    paths: Sequence[Path | str], mapping: ReplayMapping, line_id: str, use_case: UseCaseConfig
) -> list[ContextInterval]:
    """The context intervals of one or more recordings (files of one line, read one after the
    other); [] when the mapping has no context block. Runs of different files may not overlap."""
    if mapping.context is None:
        return []
    target = target_column(mapping, use_case, line_id)
    ts = mapping.timestamp
    per_file = []
    for path in paths:
        path = Path(path)
        columns = read_columns(path, [ts.column, *context_columns(mapping, target)], context_settings(mapping))
        time_ms, valid = parse_times(columns[ts.column], ts, ts.column)
        check_timestamps(columns[ts.column].values, valid, mapping, source=str(path))
        frame = pd.DataFrame({name: column.values for name, column in columns.items() if name != ts.column})
        per_file.append(
            (str(path), context_intervals(frame, time_ms, valid, mapping, line_id, use_case, source=str(path)))
        )
    return [interval for _, intervals in join_recordings(per_file) for interval in intervals]


def join_recordings(per_file: list[tuple[str, list[ContextInterval]]]) -> list[tuple[str, list[ContextInterval]]]:
    """Several recordings' intervals (source, intervals) as one history, per file in time order.

    Runs of different files may not overlap (an error naming both files). Where a file's last
    interval of a kind ends exactly where the next file's first one of that kind starts, with the
    same value and limits, they become one: the earlier file's interval is extended and the later
    file's dropped (a run, a state or a setpoint going on from one recording into the next)."""
    _check_runs_across_files(per_file)
    never = datetime.max.replace(tzinfo=UTC)
    ordered = sorted(per_file, key=lambda item: min((i.start for i in item[1]), default=never))
    joined: list[tuple[str, list[ContextInterval]]] = []
    last: dict[ContextKind, tuple[int, int]] = {}  # kind -> (file, position) of the latest interval so far
    for source, intervals in ordered:
        kept: list[ContextInterval] = []
        latest: dict[ContextKind, tuple[int, int]] = {}
        for interval in intervals:  # in time order per kind
            kind, before = interval.kind, last.get(interval.kind)
            if kind not in latest and before is not None:
                file, position = before
                previous = joined[file][1][position]
                if (previous.end, previous.value, previous.spec) == (interval.start, interval.value, interval.spec):
                    joined[file][1][position] = previous.model_copy(update={"end": interval.end})
                    latest[kind] = before
                    continue
            kept.append(interval)
            latest[kind] = (len(joined), len(kept) - 1)
        joined.append((source, kept))
        last.update(latest)
    return joined


def _check_runs_across_files(per_file: list[tuple[str, list[ContextInterval]]]) -> None:
    runs = sorted(
        ((i.start, i.end, source, i) for source, intervals in per_file for i in intervals if i.kind is ContextKind.RUN),
        key=lambda r: r[0],
    )
    for (_, end, source, before), (start, _, other, after) in zip(runs, runs[1:], strict=False):
        if start < end:
            raise ValueError(
                f"overlapping runs: run {after.value!r} of {other} starts at {start.isoformat()}, before run "
                f"{before.value!r} of {source} ends at {end.isoformat()} (context.runs: the recordings overlap in time)"
            )


def check_timestamps(raw: pd.Series, valid: np.ndarray, mapping: ReplayMapping, *, source: str) -> None:
    """Refuse a timestamp format that fails most rows: the mapping is wrong, not a few cells.
    (A minority of bad cells is a data problem: replay counts them as bad_time.)"""
    bad = np.flatnonzero(~valid)
    if len(valid) == 0 or 2 * len(bad) <= len(valid):
        return
    ts = mapping.timestamp
    first = int(bad[0])
    raise ValueError(
        f"{source}: timestamp.format={ts.format!r} (timezone={ts.timezone!r}) does not parse "
        f"{len(bad)} of {len(valid)} rows of timestamp.column={ts.column!r}; first: row {first + 1} value "
        f"{str(raw.iloc[first])!r}: fix timestamp.format in the mapping"
    )


# --- derivation ----------------------------------------------------------------------------------
def context_intervals(
    frame: pd.DataFrame,
    time_ms: np.ndarray,
    valid: np.ndarray,
    mapping: ReplayMapping,
    line_id: str,
    use_case: UseCaseConfig,
    *,
    source: str,
) -> list[ContextInterval]:
    """Runs, states and limits of one recording (rows in file order; rows with valid=False are left out)."""
    block = mapping.context
    if block is None:
        return []
    target = _median_target(mapping, use_case, line_id, source)
    _require(frame, block, target, source)
    kept = np.flatnonzero(np.asarray(valid, dtype=bool))
    if len(valid) == 0:
        return []  # an empty recording: nothing happened
    if kept.size == 0:
        raise ValueError(
            f"{source}: no row has a usable timestamp (timestamp.column={mapping.timestamp.column!r}, "
            f"format={mapping.timestamp.format!r}): no context can be derived"
        )
    t_file = np.asarray(time_ms, dtype=np.int64)[kept]
    rows = ContextRows(frame, kept, source)

    run_values, run_of_file_row = _runs(block, rows, t_file, source)
    order = np.argsort(t_file, kind="stable")
    t = t_file[order]
    run = run_of_file_row[order]
    end_ms = int(t[-1]) + step_ms(t, use_case)
    run_first = value_starts(run)
    run_spans = spans(t, run_first, end_ms)
    intervals = _run_intervals(block, run_values, run, run_first, run_spans, line_id, use_case, source)

    states = None
    if block.states is not None:
        states = machine_states(block, rows, order, t, run, run_first, end_ms, source)
        intervals += state_intervals(block, states, t, end_ms, line_id)

    limits = block.limits
    if limits is not None and (limits.setpoint or limits.columns is not None):
        intervals += column_limits(block, rows, order, t, run, end_ms, line_id, use_case, source)
    elif limits is not None and limits.run_median:
        intervals += median_limits(block, rows, order, target, run, run_spans, states, line_id, use_case, source)
    return intervals


def _median_target(mapping: ReplayMapping, use_case: UseCaseConfig, line_id: str, source: str) -> str | None:
    """The target metric's column when the limits are run medians (None otherwise); one must map to it."""
    limits = mapping.context.limits
    if limits is None or not limits.run_median:
        return None
    target = target_column(mapping, use_case, line_id)
    if target is None:
        raise ValueError(
            f"{source}: context.limits.run_median=True takes the median of the target metric "
            f"{use_case.target_metric!r} of use case {use_case.use_case!r}, but no column maps to it in `columns`"
        )
    return target


def _run_intervals(
    block: ContextMapping,
    run_values: list[str],
    run: np.ndarray,
    run_first: np.ndarray,
    run_spans: list[tuple[int, int]],
    line_id: str,
    use_case: UseCaseConfig,
    source: str,
) -> list[ContextInterval]:
    """One RUN interval per run, carrying the run's `fixed` limits when the block gives them."""
    fixed = fixed_limits(block, run_values, use_case, source)
    intervals = []
    for (start, end), first in zip(run_spans, run_first, strict=True):
        if start < end:
            value = run_values[run[first]]
            spec = fixed.get(value) if fixed is not None else None
            intervals.append(context_interval(ContextKind.RUN, line_id, start, end, value, spec))
    return intervals


def _require(frame: pd.DataFrame, block: ContextMapping, target: str | None, source: str) -> None:
    present = list(frame.columns)
    wanted = dict(block.columns())
    if target is not None:
        wanted.setdefault(target, f"context.limits.run_median=True (the target's column {target!r})")
    for column, setting in wanted.items():
        if column not in frame.columns:
            shown = present if len(present) <= 40 else [*present[:40], "..."]
            raise ValueError(f"{source}: {setting} names column {column!r}, which the file lacks (columns: {shown})")


def _runs(block: ContextMapping, rows: ContextRows, t_file: np.ndarray, source: str) -> tuple[list[str], np.ndarray]:
    """(run values, run index per row in file order); runs in time order, overlap refused."""
    column = block.runs.column
    if column is None:
        value = block.runs.value or Path(source).stem or "run"
        return [value], np.zeros(len(t_file), dtype=np.int64)
    text, missing = rows.text(column)
    labels = text.mask(missing).ffill().bfill()
    if labels.isna().all():
        raise ValueError(f"{source}: context.runs.column={column!r} holds no value in any row: no run can be cut")
    codes, _ = pd.factorize(labels)
    first = value_starts(codes)
    lo = np.minimum.reduceat(t_file, first)
    hi = np.maximum.reduceat(t_file, first)
    clash = np.flatnonzero(lo[1:] < hi[:-1])
    if clash.size:
        n = int(clash[0])
        raise ValueError(
            f"{source}: overlapping runs from context.runs.column={column!r}: run {labels.iloc[first[n + 1]]!r} "
            f"(from row {rows.row_number(first[n + 1])}) starts at {iso(lo[n + 1])}, before run "
            f"{labels.iloc[first[n]]!r} (from row {rows.row_number(first[n])}) ends at {iso(hi[n])}: "
            "the rows are not in time order"
        )
    values = [str(labels.iloc[i]) for i in first]
    run = np.repeat(np.arange(len(first)), np.diff(np.append(first, len(codes))))
    return values, run


# summary lives in context_publishing.py; edgeloop/backfill/run.py (being restructured) still reads
# it through this module, so it stays importable from here until that imports context_publishing.
__all__ = [
    "check_timestamps",
    "context_columns",
    "context_intervals",
    "context_settings",
    "join_recordings",
    "recording_context",
    "summary",
    "target_column",
]
