"""Reading a recorded CSV or Parquet file for replay: the columns a mapping names with their gaps,
cell values (numbers as floats; other text kept, for the buffer to refuse) and timestamps as epoch
milliseconds in the mapping's time zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .replay_mapping import EPOCH_MS, EPOCH_S, ISO8601, TimestampMapping

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
_UTC_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"


@dataclass(frozen=True)
class Column:
    values: pd.Series
    missing: np.ndarray  # True where the file holds no value (empty CSV cell, Parquet null)


def read_columns(path: Path, wanted: Iterable[str], named: Mapping[str, str] | None = None) -> dict[str, Column]:
    """The wanted columns of a CSV (every cell as text) or Parquet file (typed), with their gaps.

    Only those columns are read. A wanted column the file lacks is an error naming it, through
    `named[column]` (e.g. "context.runs.column='recipe'") when given."""
    path = Path(path)
    wanted = list(dict.fromkeys(wanted))
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        sep = "\t" if suffix == ".tsv" else ","
        header = list(pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, nrows=0).columns)
        _require(path, wanted, header, named or {})
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, usecols=wanted)
        return {c: Column(frame[c], (frame[c] == "").to_numpy()) for c in wanted}
    if suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        _require(path, wanted, pq.read_schema(path).names, named or {})
        table = pq.read_table(path, columns=wanted)
        columns = {}
        for c in wanted:
            arrow = table.column(c)
            columns[c] = Column(arrow.to_pandas(), arrow.is_null().to_numpy(zero_copy_only=False))
        return columns
    raise ValueError(f"{path}: suffix {path.suffix!r} is neither CSV {CSV_SUFFIXES} nor Parquet {PARQUET_SUFFIXES}")


def _require(path: Path, wanted: list[str], present: list[str], named: Mapping[str, str]) -> None:
    missing = [c for c in wanted if c not in present]
    if not missing:
        return
    shown = present if len(present) <= 40 else [*present[:40], f"... {len(present) - 40} more"]
    settings = [named[c] for c in missing if c in named]
    if settings:
        column = next(c for c in missing if c in named)
        raise ValueError(f"{path}: {settings[0]} names column {column!r}, which the file lacks (columns: {shown})")
    raise ValueError(f"{path}: the mapping names columns {missing} that the file lacks (columns: {shown})")


def cell_values(column: Column) -> list[Any]:
    """Numbers as floats (NaN and inf kept, for the buffer to refuse); text that is no number as text."""
    series = column.values
    if pd.api.types.is_bool_dtype(series):
        return series.tolist()  # the buffer refuses booleans as non-numeric
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(float).tolist()
    numbers = pd.to_numeric(series, errors="coerce").astype(float)
    values = numbers.tolist()
    for i in np.flatnonzero(numbers.isna().to_numpy() & ~column.missing):
        values[i] = _number_or_text(series.iloc[i])
    return values


def _number_or_text(cell: Any) -> Any:
    try:
        return float(cell)  # "nan", "inf": numbers the buffer refuses as non-finite
    except (TypeError, ValueError):
        return cell  # the buffer refuses it as non-numeric


def parse_times(column: Column, spec: TimestampMapping, column_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(time_ms as int64, valid mask) of a timestamp column."""
    series = column.values
    is_datetime = pd.api.types.is_datetime64_any_dtype(series)
    if spec.format in (EPOCH_S, EPOCH_MS):
        if is_datetime:
            raise ValueError(
                f"timestamp.format={spec.format!r}, but column {column_name!r} holds timestamps "
                f"({series.dtype}): use format: {ISO8601}"
            )
        numbers = pd.to_numeric(series, errors="coerce").astype(float).to_numpy()
        scaled = numbers * (1000.0 if spec.format == EPOCH_S else 1.0)
        valid = np.isfinite(scaled) & ~column.missing
        return np.where(valid, np.round(np.where(valid, scaled, 0)), 0).astype(np.int64), valid
    stamps = series if is_datetime else _parse_datetimes(series, spec)
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize(spec.timezone, ambiguous="NaT", nonexistent="NaT")
    valid = stamps.notna().to_numpy() & ~column.missing
    since_epoch = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
    return since_epoch.fillna(0).astype(np.int64).to_numpy(), valid


def _parse_datetimes(series: pd.Series, spec: TimestampMapping) -> pd.Series:
    fmt = "ISO8601" if spec.format == ISO8601 else spec.format
    text = series.astype(str)
    if spec.format == ISO8601:
        # values with an offset are exact; the others are read in the mapping's time zone
        has_offset = text.str.contains(_UTC_OFFSET, regex=True).to_numpy()
        if has_offset.any() and not has_offset.all():
            aware = pd.to_datetime(text[has_offset], format=fmt, errors="coerce", utc=True)
            naive = pd.to_datetime(text[~has_offset], format=fmt, errors="coerce")
            naive = naive.dt.tz_localize(spec.timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
            return pd.concat([aware, naive]).sort_index()
        return pd.to_datetime(text, format=fmt, errors="coerce", utc=bool(has_offset.all()) and len(text) > 0)
    return pd.to_datetime(text, format=fmt, errors="coerce", utc="%z" in fmt)
