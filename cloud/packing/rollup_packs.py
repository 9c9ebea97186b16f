"""Metric packs from 1-minute rollups and context slices (Mímir III-B's summarized view).

A pack is one window of `window_minutes` whole minutes, aligned to the epoch grid of
`stride_minutes` (default: the window, so 5-minute packs sit on 5-minute boundaries like the 5m
rollups), that lies inside ONE context slice row: every minute of it has the same run, state,
shift and work order. Per metric (or role) key it carries count, mean, std (population), min and
max over the window, merged from the minute rollups -- m2 with Chan's pairwise update, so std
stays exact where sum2 would cancel. Minutes without samples are allowed; a key without any
sample in a window gets count 0 and NaN statistics; a window without any sample is dropped.

Everything is numpy over a dense (key, minute) grid: one gather of the window's minutes, then
reductions along the last axis. Cost is O(keys x minutes x window), independent of sample counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from edgeloop.cloud.datalake.context import context_columns, quantize, sub_intervals
from edgeloop.cloud.datalake.rollups import MINUTE_MS, build_levels, require_columns
from edgeloop.cloud.packing.taxonomy import rollups_to_roles
from edgeloop.schemas import ContextInterval, UseCaseConfig

PACK_STATS = ("count", "mean", "std", "min", "max")
DEFAULT_WINDOW_MINUTES = 5


def pack_columns(keys: Iterable[str]) -> list[str]:
    return [f"{key}__{stat}" for key in keys for stat in PACK_STATS]


def metric_packs(
    rollups: pd.DataFrame,
    slices: pd.DataFrame,
    *,
    window_minutes: int = DEFAULT_WINDOW_MINUTES,
    stride_minutes: int | None = None,
    key: str = "metric",
) -> pd.DataFrame:
    """Packs of 1-minute `rollups` (a `key` column plus count, sum, min, max, m2 and bucket_start_ms)
    inside the context `slices` (`cloud.datalake.context.quantize(..., "1m")`).

    Columns: window_start_ms, window_end_ms, the context columns, then `<key>__<stat>` per key.
    """
    stride_minutes = window_minutes if stride_minutes is None else stride_minutes
    for name, value in (("window_minutes", window_minutes), ("stride_minutes", stride_minutes)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive whole number of minutes")
    require_columns(rollups.columns, (key, "bucket_start_ms", "count", "sum", "min", "max", "m2"), "rollups")
    require_columns(slices.columns, ("slice_start_ms", "slice_end_ms", *context_columns()), "slices")
    keys = sorted(map(str, pd.unique(rollups[key])))
    grid = _MinuteGrid.of(slices)
    starts = grid.window_starts(window_minutes, stride_minutes)
    if grid.minutes == 0 or starts.size == 0 or not keys:
        return _empty(keys)
    stats = _dense_stats(rollups, key, keys, grid)
    window = starts[:, None] + np.arange(window_minutes)  # (windows, W) minute indices
    packed = _merge_windows(stats, window)
    has_data = packed["count"].sum(axis=0) > 0
    starts, packed = starts[has_data], {name: values[:, has_data] for name, values in packed.items()}
    frame = {
        "window_start_ms": grid.start_ms + starts * MINUTE_MS,
        "window_end_ms": grid.start_ms + (starts + window_minutes) * MINUTE_MS,
    }
    context = slices.iloc[grid.slice_row[starts]].reset_index(drop=True)
    columns = {f"{k}__{stat}": packed[stat][i] for i, k in enumerate(keys) for stat in PACK_STATS}
    return pd.concat([pd.DataFrame(frame), context[context_columns()], pd.DataFrame(columns)], axis=1)


@dataclass(frozen=True)
class _MinuteGrid:
    """The minutes from the first slice's start to the last slice's end, and the slice row of each."""

    start_ms: int
    slice_row: np.ndarray  # slice row per minute, -1 where no slice covers it

    @property
    def minutes(self) -> int:
        return len(self.slice_row)

    @classmethod
    def of(cls, slices: pd.DataFrame) -> _MinuteGrid:
        first = slices["slice_start_ms"].to_numpy(dtype=np.int64)
        last = slices["slice_end_ms"].to_numpy(dtype=np.int64)
        if first.size == 0:
            return cls(0, np.empty(0, dtype=np.int64))
        off_grid = np.flatnonzero((first % MINUTE_MS) | (last % MINUTE_MS))
        if off_grid.size:
            raise ValueError(f"slices: slice_start_ms={first[off_grid[0]]} is not on the 1-minute grid")
        if (first[1:] < last[:-1]).any() or (last <= first).any():
            raise ValueError("slices must be sorted, non-empty and non-overlapping (build them with quantize())")
        start_ms = int(first[0])
        slice_row = np.full((int(last[-1]) - start_ms) // MINUTE_MS, -1, dtype=np.int64)
        lengths = (last - first) // MINUTE_MS
        covered = np.repeat((first - start_ms) // MINUTE_MS, lengths) + _ranges(lengths)
        slice_row[covered] = np.repeat(np.arange(len(first)), lengths)
        return cls(start_ms, slice_row)

    def window_starts(self, window: int, stride: int) -> np.ndarray:
        """Minute indices of windows on the epoch stride grid that sit in one slice row."""
        if self.minutes < window:
            return np.empty(0, dtype=np.int64)
        first = (-(self.start_ms // MINUTE_MS)) % stride
        starts = np.arange(first, self.minutes - window + 1, stride, dtype=np.int64)
        rows = self.slice_row[starts[:, None] + np.arange(window)]
        return starts[(rows[:, 0] >= 0) & (rows == rows[:, :1]).all(axis=1)]


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """0..n-1 for every n in lengths, concatenated."""
    total = int(lengths.sum())
    return np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _dense_stats(rollups: pd.DataFrame, key: str, keys: list[str], grid: _MinuteGrid) -> dict[str, np.ndarray]:
    """(keys, minutes) arrays of count, sum, min, max, m2; empty minutes hold the identities."""
    bucket = rollups["bucket_start_ms"].to_numpy(dtype=np.int64)
    if (bucket % MINUTE_MS).any():
        bad = bucket[np.flatnonzero(bucket % MINUTE_MS)[0]]
        raise ValueError(f"rollups: bucket_start_ms={bad} is not on the 1-minute grid; pass 1m rollups")
    minute = (bucket - grid.start_ms) // MINUTE_MS
    inside = (minute >= 0) & (minute < grid.minutes)
    codes, uniques = pd.factorize(rollups[key])  # fast on the categorical columns rollups carry
    position = {k: i for i, k in enumerate(keys)}
    row = np.array([position[str(u)] for u in uniques], dtype=np.int64)[codes]
    flat = row[inside] * grid.minutes + minute[inside]
    if flat.size and np.bincount(flat, minlength=len(keys) * grid.minutes).max() > 1:
        raise ValueError("rollups: a (key, bucket_start_ms) appears twice; pass one rollup row per key and minute")
    shape = (len(keys), grid.minutes)
    stats = {
        "count": np.zeros(shape, dtype=np.int64),
        "sum": np.zeros(shape),
        "min": np.full(shape, np.inf),
        "max": np.full(shape, -np.inf),
        "m2": np.zeros(shape),
    }
    for name, values in stats.items():
        values.reshape(-1)[flat] = rollups[name].to_numpy()[inside]
    return stats


def _merge_windows(stats: dict[str, np.ndarray], window: np.ndarray) -> dict[str, np.ndarray]:
    """(keys, windows) arrays of PACK_STATS from the minutes each window gathers."""
    count_i = stats["count"][:, window]  # (keys, windows, W)
    sum_i = stats["sum"][:, window]
    count = count_i.sum(axis=-1)
    total = sum_i.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        spread = np.where(count_i > 0, sum_i / np.maximum(count_i, 1) - mean[..., None], 0.0)
        m2 = stats["m2"][:, window].sum(axis=-1) + (count_i * spread * spread).sum(axis=-1)
        std = np.sqrt(np.maximum(m2, 0.0) / count)
    empty = count == 0
    low = np.where(empty, np.nan, stats["min"][:, window].min(axis=-1))
    high = np.where(empty, np.nan, stats["max"][:, window].max(axis=-1))
    return {"count": count, "mean": mean, "std": std, "min": low, "max": high}


def _empty(keys: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"window_start_ms": pd.Series(dtype=np.int64), "window_end_ms": pd.Series(dtype=np.int64)})
    for column in context_columns():
        frame[column] = pd.Series(dtype=np.float64 if column in ("spec_lower", "spec_upper") else object)
    for column in pack_columns(keys):
        frame[column] = pd.Series(dtype=np.int64 if column.endswith("__count") else np.float64)
    return frame


# --- one line, end to end ------------------------------------------------------------------------


@dataclass
class LinePacks:
    line_id: str
    samples: int
    levels: dict[str, pd.DataFrame]  # resolution -> rollups (metric keys), as build_levels returns
    slices: pd.DataFrame  # 1-minute context slices
    packs: pd.DataFrame  # by role (the use case's taxonomy)


def build_line_packs(
    days: Iterable[pa.Table],
    intervals: Iterable[ContextInterval],
    *,
    line_id: str,
    use_case: UseCaseConfig,
    window_minutes: int = DEFAULT_WINDOW_MINUTES,
) -> LinePacks:
    """Curated samples (one Arrow table per event day, read lazily) + context intervals -> rollups at
    every level, 1-minute context slices, and packs of taxonomy roles.

    Days are consumed one at a time, so memory holds one day of samples plus the rollups.
    """
    samples = 0

    def counted(tables: Iterable[pa.Table]):
        nonlocal samples
        for table in tables:
            samples += table.num_rows
            yield table

    levels = build_levels(counted(days))
    slices, packs = packs_from_rollups(
        levels["1m"], intervals, line_id=line_id, use_case=use_case, window_minutes=window_minutes
    )
    return LinePacks(line_id=line_id, samples=samples, levels=levels, slices=slices, packs=packs)


def packs_from_rollups(
    rollups_1m: pd.DataFrame,
    intervals: Iterable[ContextInterval],
    *,
    line_id: str,
    use_case: UseCaseConfig,
    window_minutes: int = DEFAULT_WINDOW_MINUTES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(1-minute context slices, packs of taxonomy roles) from a line's stored 1-minute rollups."""
    slices = quantize(sub_intervals(intervals, line_id), "1m")
    roles = rollups_to_roles(rollups_1m, use_case, line_id)
    return slices, metric_packs(roles, slices, window_minutes=window_minutes, key="role")
