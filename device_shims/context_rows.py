"""The building blocks of a recording's context intervals (recording_context.py): its rows by column
at the rows with a usable time, where a value changes, the spans between, and the intervals.

Vectorised over the rows (numpy/pandas, Arrow for text cells): a recording may hold millions of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from edgeloop.schemas import ContextInterval, ContextKind, UseCaseConfig
from edgeloop.schemas.context import SpecLimits

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ContextRows:
    """The frame's columns at the rows with a usable time, in file order."""

    def __init__(self, frame: pd.DataFrame, kept: np.ndarray, source: str) -> None:
        self.frame = frame
        self.kept = kept
        self.source = source

    def text(self, column: str) -> tuple[pd.Series, np.ndarray]:
        """(values as stripped text, missing mask: null or blank cells)."""
        series = self.frame[column].iloc[self.kept].reset_index(drop=True)
        if pd.api.types.is_string_dtype(series) or series.dtype == object:
            text = series.astype("string").str.strip()
        else:
            text = series.astype("string")
        missing = text.isna().to_numpy() | (text == "").fillna(True).to_numpy(dtype=bool)
        return text, missing

    def numbers(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(float values, NaN where empty or not a number; text mask: non-empty cells that are no number)."""
        series = self.frame[column].iloc[self.kept]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            return series.astype(float).to_numpy(), np.zeros(len(series), dtype=bool)
        text, blank = self.text(column)
        fast = _cast_floats(text, blank)
        if fast is not None:
            return fast, np.zeros(len(series), dtype=bool)
        numbers = pd.to_numeric(text, errors="coerce").astype(float).to_numpy()
        return numbers, np.isnan(numbers) & ~blank

    def row_number(self, position: int) -> int:
        return int(self.kept[position]) + 1


def _cast_floats(text: pd.Series, blank: np.ndarray) -> np.ndarray | None:
    """Text cells as floats through Arrow (fast), NaN where blank; None when a cell is no number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        array = pa.array(text, type=pa.string(), from_pandas=True)
        array = pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), array)
        return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False).astype(float)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError, TypeError):
        return None


# --- spans and intervals -------------------------------------------------------------------------
def value_starts(codes: np.ndarray) -> np.ndarray:
    """Positions where a new value begins (always 0)."""
    codes = np.asarray(codes)
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.ones(codes.size, dtype=bool)
    change[1:] = codes[1:] != codes[:-1]
    return np.flatnonzero(change)


def spans(t: np.ndarray, first: np.ndarray, end_ms: int) -> list[tuple[int, int]]:
    """(start, end) in ms of the stretches that begin at positions `first` of the sorted times `t`;
    each ends where the next begins, the last at `end_ms`."""
    starts = t[first].astype(np.int64)
    ends = np.append(starts[1:], end_ms)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def step_ms(t: np.ndarray, use_case: UseCaseConfig) -> int:
    """The recording's sample step: the median gap between its sorted times, else the use case's period."""
    gaps = np.diff(t)  # t is sorted
    gaps = gaps[gaps > 0]
    if gaps.size:
        return max(1, int(np.median(gaps)))
    return max(1, int(round(use_case.sample_period_s * 1000)))


def iso(ms: int) -> str:
    """Epoch ms as UTC ISO text for messages (with milliseconds only when there are some)."""
    spec = "milliseconds" if int(ms) % 1000 else "seconds"
    return (EPOCH + timedelta(milliseconds=int(ms))).isoformat(timespec=spec).replace("+00:00", "Z")


def interval_id(kind: ContextKind, line_id: str, start_ms: int) -> str:
    """<kind>-<line>-<start, UTC ms>: deterministic, so replaying or backfilling a file again replaces them."""
    moment = EPOCH + timedelta(milliseconds=int(start_ms))
    return f"{kind.value}-{line_id}-{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z"


def context_interval(
    kind: ContextKind, line_id: str, start: int, end: int, value: str, spec: SpecLimits | None = None
) -> ContextInterval:
    """An interval of `kind` from `start` to `end` (epoch ms) with its deterministic id."""
    return ContextInterval(
        kind=kind,
        interval_id=interval_id(kind, line_id, start),
        line_id=line_id,
        start=EPOCH + timedelta(milliseconds=start),
        end=EPOCH + timedelta(milliseconds=end),
        value=value,
        spec=spec,
    )
