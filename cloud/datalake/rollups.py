"""Multi-resolution rollups of curated metrics (Mímir III-B): count, sum, min, max, sum2 per bucket.

A rollup row covers one (metric, bucket) of a line, the bucket being [bucket_start_ms,
bucket_start_ms + width) aligned to the Unix epoch (so 1 d buckets are UTC days). Its columns are
associative: count, sum and sum2 (Σx²) add, min and max combine, so a coarser level is built by
re-aggregating the finer one (1m -> 5m -> 1h -> 1d) and equals aggregating the samples directly.

Mean and variance. sum2 is kept because any SQL engine re-aggregates it with a plain SUM, but the
variance derived from it, (sum2 - sum²/n)/n, cancels catastrophically when |mean| >> std: its
relative error is about eps * n * (1 + mean²/var), e.g. 1e-4 for a metric at 1e6 with std 1 over a
day. So each row also carries m2 = Σ(x - mean)², the numerically stable choice: at 1 minute it is
the two-pass centered sum, and re-aggregation merges it with Chan, Golub & LeVeque's pairwise
update m2 = Σ m2_i + Σ n_i (mean_i - mean)², which never subtracts large sums. `variance` uses m2;
`variance_from_sums` is the SQL-portable fallback with the error above.

Speed: everything is numpy over contiguous arrays of rows sorted by (metric, time) -- the order
curated parts are written in, so no sort is needed then. Bucket boundaries come from one
`searchsorted` per metric over the bucket edges (O(buckets log n), not a division per sample),
and each statistic is one `reduceat` pass.

This module is the math, shared by the rollups function (functions/rollups: builds and stores a
line's levels under rollups/), the context timeline (cloud/datalake/context.py) and the metric
packs (cloud/packing/rollup_packs.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MINUTE_MS = 60_000
# name -> bucket width; each level is re-aggregated from the one before it.
RESOLUTIONS: dict[str, int] = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "1h": 60 * MINUTE_MS, "1d": 1440 * MINUTE_MS}
LEVELS = tuple(RESOLUTIONS)

ROLLUP_SCHEMA = pa.schema(
    [
        ("metric", pa.dictionary(pa.int32(), pa.string())),
        ("bucket_start_ms", pa.int64()),
        ("count", pa.int64()),
        ("sum", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("sum2", pa.float64()),
        ("m2", pa.float64()),
    ]
)
ROLLUP_COLUMNS = ROLLUP_SCHEMA.names
SAMPLE_COLUMNS = ("metric", "time_ms", "value")


def bucket_width_ms(resolution: str | int) -> int:
    """Width of a resolution given by name ('1m', '5m', '1h', '1d') or in milliseconds."""
    if isinstance(resolution, str):
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution={resolution!r} is not one of {list(RESOLUTIONS)}")
        return RESOLUTIONS[resolution]
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution <= 0:
        raise ValueError(f"resolution={resolution!r} must be a name in {list(RESOLUTIONS)} or a positive int of ms")
    return int(resolution)


@dataclass(frozen=True)
class _Rollup:
    """Rollup columns as arrays; `code` indexes `metrics`. Rows sorted by (code, bucket)."""

    metrics: tuple[str, ...]
    code: np.ndarray  # int32
    bucket: np.ndarray  # int64, bucket start in ms
    count: np.ndarray  # int64
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray
    sum2: np.ndarray
    m2: np.ndarray

    STATS = ("count", "sum", "min", "max", "sum2", "m2")

    def take(self, order: np.ndarray) -> _Rollup:
        return replace(
            self,
            code=self.code[order],
            bucket=self.bucket[order],
            **{name: getattr(self, name)[order] for name in self.STATS},
        )

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "metric": pd.Categorical.from_codes(self.code, categories=list(self.metrics)),
                "bucket_start_ms": self.bucket,
                **{name: getattr(self, name) for name in self.STATS},
            }
        )


# --- public API -----------------------------------------------------------------------------------


def rollup_samples(samples: pa.Table | pd.DataFrame, resolution: str | int = "1m") -> pd.DataFrame:
    """Aggregate raw samples (columns metric, time_ms, value; any order) into buckets directly."""
    return _combine([_aggregate_samples(samples, bucket_width_ms(resolution))]).to_frame()


def reaggregate(rollups: pd.DataFrame, resolution: str | int, *, from_resolution: str | int) -> pd.DataFrame:
    """Re-aggregate rollups of `from_resolution` into the coarser `resolution` (a multiple of it)."""
    fine, coarse = bucket_width_ms(from_resolution), bucket_width_ms(resolution)
    if coarse % fine:
        raise ValueError(
            f"resolution={resolution!r} ({coarse} ms) is not a multiple of from_resolution={from_resolution!r} ({fine} ms)"
        )
    misaligned = np.flatnonzero(rollups["bucket_start_ms"].to_numpy() % fine)
    if misaligned.size:
        value = rollups["bucket_start_ms"].iloc[misaligned[0]]
        raise ValueError(f"bucket_start_ms={value} is not aligned to from_resolution={from_resolution!r} ({fine} ms)")
    return _reaggregate(_from_frame(rollups), coarse).to_frame()


def build_levels(parts: Iterable[pa.Table | pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """All levels of rollups from curated samples given in parts (e.g. one per event day).

    Parts may come in any order and overlap in time; sorted, non-overlapping parts (the curated
    layout) take the fast path. 1m is aggregated from samples; every coarser level re-aggregates
    the level before it.
    """
    level = _combine([_aggregate_samples(part, RESOLUTIONS[LEVELS[0]]) for part in parts])
    levels = {LEVELS[0]: level}
    for name in LEVELS[1:]:
        level = _reaggregate(level, RESOLUTIONS[name])
        levels[name] = level
    return {name: rollup.to_frame() for name, rollup in levels.items()}


def mean(rollups: pd.DataFrame) -> pd.Series:
    return rollups["sum"] / rollups["count"]


def variance(rollups: pd.DataFrame, ddof: int = 0) -> pd.Series:
    """Variance per row from m2 (numerically stable); ddof=1 gives the sample variance (NaN for n=1)."""
    denominator = (rollups["count"] - ddof).where(rollups["count"] > ddof)
    return rollups["m2"] / denominator


def variance_from_sums(count, total, sum2, ddof: int = 0):
    """Variance from (count, sum, sum2) alone, as SQL over the rollups computes it.

    Written as (sum2 - sum * mean) / (n - ddof) and clamped at 0 (rounding can push it below);
    relative error ~ eps * n * (1 + mean²/var): fine unless |mean| >> std, then use `variance`.
    """
    count = np.asarray(count, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    centered = np.asarray(sum2, dtype=np.float64) - total * (total / count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > ddof, np.maximum(centered, 0.0) / (count - ddof), np.nan)


def to_arrow(rollups: pd.DataFrame) -> pa.Table:
    """A rollup frame as an Arrow table of ROLLUP_SCHEMA (what is written as Parquet)."""
    missing = [c for c in ROLLUP_COLUMNS if c not in rollups.columns]
    if missing:
        raise ValueError(f"rollups lack columns {missing}; expected {ROLLUP_COLUMNS}")
    table = pa.Table.from_pandas(rollups[ROLLUP_COLUMNS], preserve_index=False)
    return table.cast(ROLLUP_SCHEMA)


def from_arrow(table: pa.Table) -> pd.DataFrame:
    """An Arrow table of ROLLUP_SCHEMA as a rollup frame (metric categories sorted)."""
    return _from_arrow_rollup(table).to_frame()


def combine_arrow(tables: Iterable[pa.Table]) -> pd.DataFrame:
    """Arrow tables of ROLLUP_SCHEMA at one resolution (e.g. stored months) as one rollup frame,
    sorted by (metric, bucket_start_ms); rows of the same metric and bucket are merged."""
    partials = [_from_arrow_rollup(table) for table in tables]
    if not partials:
        return _empty(()).to_frame()
    return _combine(partials).to_frame()


# --- samples -> rollups ---------------------------------------------------------------------------


def _aggregate_samples(samples: pa.Table | pd.DataFrame, width: int) -> _Rollup:
    metrics, code, time_ms, value = _sample_columns(samples)
    _require_finite(metrics, code, time_ms, value)
    metric_bounds = _metric_bounds(code)
    if metric_bounds is None or not _times_sorted(time_ms, metric_bounds):
        order = np.lexsort((time_ms, code))
        code, time_ms, value = code[order], time_ms[order], value[order]
        metric_bounds = _metric_bounds(code)
    starts = _bucket_starts(metric_bounds, time_ms, width)
    count = np.diff(np.append(starts, len(value))).astype(np.int64)
    total = np.add.reduceat(value, starts) if len(value) else np.empty(0)
    scratch = np.multiply(value, value)
    sum2 = np.add.reduceat(scratch, starts) if len(value) else np.empty(0)
    # Two-pass centered sum of squares: the stable m2 (see module docstring).
    centered = np.repeat(total / np.maximum(count, 1), count)
    np.subtract(value, centered, out=centered)
    np.multiply(centered, centered, out=centered)
    m2 = np.add.reduceat(centered, starts) if len(value) else np.empty(0)
    return _Rollup(
        metrics=metrics,
        code=code[starts],
        bucket=time_ms[starts] // width * width,
        count=count,
        sum=total,
        min=np.minimum.reduceat(value, starts) if len(value) else np.empty(0),
        max=np.maximum.reduceat(value, starts) if len(value) else np.empty(0),
        sum2=sum2,
        m2=m2,
    )


def _sample_columns(samples: pa.Table | pd.DataFrame) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """(metric names, int32 code per row, time_ms, value) without copying where the input allows."""
    if isinstance(samples, pd.DataFrame):
        require_columns(samples.columns, SAMPLE_COLUMNS, "samples")
        names, code = _metric_codes(samples["metric"])
        time_ms, value = samples["time_ms"].to_numpy(), samples["value"].to_numpy()
    elif isinstance(samples, pa.Table):
        require_columns(samples.column_names, SAMPLE_COLUMNS, "samples")
        metric = samples.column("metric")
        if not pa.types.is_dictionary(metric.type):
            metric = pc.dictionary_encode(metric)
        metric = metric.unify_dictionaries().combine_chunks() if isinstance(metric, pa.ChunkedArray) else metric
        names = tuple(metric.dictionary.to_pylist())
        code = metric.indices.to_numpy(zero_copy_only=False)
        time_ms = samples.column("time_ms").to_numpy()
        value = samples.column("value").to_numpy()
    else:
        raise TypeError(f"samples must be a pyarrow Table or pandas DataFrame, not {type(samples).__name__}")
    if (code < 0).any():
        raise ValueError("samples: metric has nulls")
    return names, code.astype(np.int32, copy=False), _as(time_ms, np.int64, "time_ms"), _as(value, np.float64, "value")


def _metric_codes(metric: pd.Series) -> tuple[tuple[str, ...], np.ndarray]:
    """(metric names, a code per row indexing them), from a categorical as is or by factorizing."""
    if isinstance(metric.dtype, pd.CategoricalDtype):
        return tuple(map(str, metric.cat.categories)), metric.cat.codes.to_numpy()
    code, uniques = pd.factorize(metric, sort=True)
    return tuple(map(str, uniques)), code


def _as(array: np.ndarray, dtype, column: str) -> np.ndarray:
    if array.dtype == dtype:
        return array
    if array.dtype.kind not in "iuf":
        raise ValueError(f"samples: column {column} has dtype {array.dtype}, expected {np.dtype(dtype)}")
    converted = array.astype(dtype)
    if dtype == np.int64 and not np.array_equal(converted, array):
        raise ValueError(f"samples: column {column} holds non-integer values")
    return converted


def require_columns(present, required, what: str) -> None:
    """Refuse a frame or table (its `present` column names) that lacks any of `required`."""
    missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(f"{what} lack columns {missing}; expected {list(required)}")


def _require_finite(metrics, code, time_ms, value) -> None:
    if np.isfinite(value).all():
        return
    row = np.flatnonzero(~np.isfinite(value))[0]
    raise ValueError(
        f"samples: value={value[row]} of metric {metrics[code[row]]!r} at time_ms={time_ms[row]} is not finite"
    )


def _metric_bounds(code: np.ndarray) -> np.ndarray | None:
    """Where each metric's rows start (plus the end), or None when rows are not grouped by code."""
    if not len(code):
        return np.zeros(1, np.int64)
    if (code[1:] < code[:-1]).any():
        return None
    # one comparison pass above, then a search per code value (a diff would allocate per row)
    return np.unique(np.searchsorted(code, np.arange(int(code[-1]) + 2)))


def _times_sorted(time_ms: np.ndarray, metric_bounds: np.ndarray) -> bool:
    return all(
        not (time_ms[start + 1 : end] < time_ms[start : end - 1]).any()
        for start, end in zip(metric_bounds[:-1], metric_bounds[1:], strict=False)
    )


def _bucket_starts(metric_bounds: np.ndarray, time_ms: np.ndarray, width: int) -> np.ndarray:
    """Row index where each (metric, bucket) group starts, for rows sorted by (code, time)."""
    pieces = [np.empty(0, dtype=np.int64)]
    for start, end in zip(metric_bounds[:-1], metric_bounds[1:], strict=False):
        times = time_ms[start:end]
        first, last = int(times[0]) // width, int(times[-1]) // width
        if last - first < end - start:  # dense: search the bucket edges instead of dividing every row
            edges = np.arange(first + 1, last + 1, dtype=np.int64) * width
            edge_rows = np.concatenate(([0], np.searchsorted(times, edges, side="left")))
            local = edge_rows[np.concatenate(([True], edge_rows[1:] != edge_rows[:-1]))]  # empty buckets repeat a row
        else:  # sparse (few samples over a long span): fewer rows than edges
            local = np.concatenate(([0], np.flatnonzero(np.diff(times // width)) + 1))
        pieces.append(local + start)
    return np.concatenate(pieces)


# --- rollups -> rollups ---------------------------------------------------------------------------


def _reaggregate(fine: _Rollup, width: int) -> _Rollup:
    """Merge rows of the same (metric, bucket of `width`); rows must be sorted by (code, bucket)."""
    n = len(fine.code)
    coarse_bucket = fine.bucket // width * width
    if not n:
        return replace(fine, bucket=coarse_bucket)
    changed = (np.diff(fine.code) != 0) | (np.diff(coarse_bucket) != 0)
    starts = np.concatenate(([0], np.flatnonzero(changed) + 1))
    count = np.add.reduceat(fine.count, starts)
    total = np.add.reduceat(fine.sum, starts)
    # Chan et al.: m2 = Σ m2_i + Σ n_i (mean_i - mean)², mean being the merged group's.
    spread = fine.sum / fine.count - np.repeat(total / count, np.diff(np.append(starts, n)))
    m2 = np.add.reduceat(fine.m2 + fine.count * spread * spread, starts)
    return _Rollup(
        metrics=fine.metrics,
        code=fine.code[starts],
        bucket=coarse_bucket[starts],
        count=count,
        sum=total,
        min=np.minimum.reduceat(fine.min, starts),
        max=np.maximum.reduceat(fine.max, starts),
        sum2=np.add.reduceat(fine.sum2, starts),
        m2=m2,
    )


def _combine(partials: list[_Rollup]) -> _Rollup:
    """One rollup, sorted by (metric name, bucket), from partial rollups of the same width."""
    metrics = tuple(sorted({name for p in partials for name in p.metrics}))
    rank = {name: i for i, name in enumerate(metrics)}
    remapped = [
        replace(p, code=np.array([rank[m] for m in p.metrics], dtype=np.int32)[p.code]) if len(p.code) else p
        for p in partials
    ]
    if not remapped:
        return _empty(metrics)
    merged = _Rollup(
        metrics=metrics,
        code=np.concatenate([p.code for p in remapped]).astype(np.int32, copy=False),
        bucket=np.concatenate([p.bucket for p in remapped]),
        **{name: np.concatenate([getattr(p, name) for p in remapped]) for name in _Rollup.STATS},
    )
    if (np.diff(merged.code) < 0).any():
        # Parts in time order (or one part with its own metric order) need only a stable sort by
        # metric; overlapping or unordered parts fall through to a full sort and merge.
        merged = merged.take(np.argsort(merged.code, kind="stable"))
    if _strictly_sorted(merged):
        return merged
    merged = merged.take(np.lexsort((merged.bucket, merged.code)))
    return _merge_equal_buckets(merged)


def _strictly_sorted(rollup: _Rollup) -> bool:
    code_step = np.diff(rollup.code)
    return not ((code_step < 0) | ((code_step == 0) & (np.diff(rollup.bucket) <= 0))).any()


def _merge_equal_buckets(rollup: _Rollup) -> _Rollup:
    """Merge rows with the same (code, bucket) -- parts that overlapped in time."""
    return _reaggregate(rollup, 1)  # a 1 ms width keeps every distinct bucket apart


def _from_frame(rollups: pd.DataFrame) -> _Rollup:
    require_columns(rollups.columns, ROLLUP_COLUMNS, "rollups")
    names, code = _metric_codes(rollups["metric"])
    rollup = _Rollup(
        metrics=names,
        code=code.astype(np.int32),
        bucket=rollups["bucket_start_ms"].to_numpy(dtype=np.int64),
        count=rollups["count"].to_numpy(dtype=np.int64),
        **{name: rollups[name].to_numpy(dtype=np.float64) for name in ("sum", "min", "max", "sum2", "m2")},
    )
    if (rollup.count <= 0).any():
        raise ValueError(f"rollups: count={rollup.count[rollup.count <= 0][0]} must be positive")
    return _combine([rollup])


def _from_arrow_rollup(table: pa.Table) -> _Rollup:
    require_columns(table.column_names, ROLLUP_COLUMNS, "rollups")
    return _from_frame(table.select(ROLLUP_COLUMNS).to_pandas())


def _empty(metrics: tuple[str, ...]) -> _Rollup:
    floats = {name: np.empty(0) for name in ("sum", "min", "max", "sum2", "m2")}
    return _Rollup(
        metrics=metrics, code=np.empty(0, np.int32), bucket=np.empty(0, np.int64), count=np.empty(0, np.int64), **floats
    )
