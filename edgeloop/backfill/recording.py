"""One recording read and checked against its mapping, as replay reads it; nothing written.

Cells follow replay's rules (device_shims/recording.py): an empty cell is no reading, numbers are
floats, timestamps parse with the mapping's format and timezone. Reading is done in C (pyarrow's
CSV and Parquet readers, casts); replay's Python rules run only on the columns that need them.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from edgeloop.cloud.datalake.raw import backfill_slot
from edgeloop.device_shims import recording_context
from edgeloop.device_shims.recording import CSV_SUFFIXES, PARQUET_SUFFIXES, Column, parse_times
from edgeloop.device_shims.replay_mapping import ReplayMapping
from edgeloop.schemas import ContextInterval, UseCaseConfig
from edgeloop.schemas.telemetry import MAX_BATCH_METRICS


class BackfillError(ValueError):
    """A recording cannot be backfilled as configured; the message names key, value and file."""


@dataclass
class Recording:
    """One file read and checked against the mapping; nothing written yet."""

    path: Path
    data: bytes
    sha256: str
    table: pa.Table  # the mapped columns as read (CSV: text)
    time_ms: np.ndarray  # int64 per row
    valid: np.ndarray  # bool per row: the timestamp parsed
    time_text: pa.Array  # the timestamp cells as text (for reasons)
    intervals: list[ContextInterval] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.time_ms)

    def time_cell(self, row: int) -> str:
        """The timestamp cell of `row` as read ("" when empty)."""
        value = self.time_text[row].as_py()
        return "" if value is None else value


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BackfillError(f"{what} {path}: cannot be read: {exc.strerror or exc}") from None


def read_recording(
    path: Path,
    mapping: ReplayMapping,
    mapping_path: Path,
    data_columns: list[str],
    use_case: UseCaseConfig,
    line_id: str,
) -> Recording:
    """Read `path`'s mapped columns (`data_columns`: a wide layout's value columns), parse its
    timestamps, check a long layout's metric keys and derive the context block's intervals."""
    context_columns = _context_columns(mapping, mapping_path, use_case, line_id)
    ts = mapping.timestamp.column
    data = read_bytes(path, "recording")
    numeric = [mapping.long.value_column] if mapping.layout == "long" else [c for c in data_columns if c != ts]
    wanted = _wanted_columns(mapping, data_columns, context_columns)
    table = _read_table(path, data, wanted, [c for c in numeric if c not in context_columns])
    time_text = table.column(ts).combine_chunks()
    time_ms, valid = _parse_times(time_text, mapping, path)
    recording = Recording(
        path=path,
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        table=table,
        time_ms=time_ms,
        valid=valid,
        time_text=pc.cast(time_text, pa.string()),
    )
    if mapping.layout == "long":
        _check_long_metrics(recording, mapping, use_case, path)
    if getattr(mapping, "context", None) is not None:
        frame = pd.DataFrame({c: text_series(table.column(c)) for c in context_columns})
        try:
            recording.intervals = recording_context.context_intervals(
                frame, time_ms, valid, mapping, line_id, use_case, source=str(path)
            )
        except ValueError as exc:
            raise BackfillError(str(exc)) from None
    return recording


def _context_columns(mapping: ReplayMapping, mapping_path: Path, use_case: UseCaseConfig, line_id: str) -> list[str]:
    """The columns the mapping's `context:` block reads (device_shims/recording_context.py)."""
    if getattr(mapping, "context", None) is None:
        return []
    try:
        target = recording_context.target_column(mapping, use_case, line_id)
        return recording_context.context_columns(mapping, target)
    except ValueError as exc:
        raise BackfillError(f"{mapping_path}: {exc}") from None


def _wanted_columns(mapping: ReplayMapping, data_columns: list[str], context_columns: list[str]) -> list[str]:
    ts = mapping.timestamp.column
    if mapping.layout == "wide":
        data = list(data_columns)
    else:
        data = [mapping.long.metric_column, mapping.long.value_column]
    return list(dict.fromkeys([ts, *data, *context_columns]))


def _read_table(path: Path, data: bytes, wanted: list[str], numeric: list[str]) -> pa.Table:
    """The wanted columns; CSV cells as replay reads them (recording.read_columns): empty = no value."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _read_csv(path, data, "\t" if suffix == ".tsv" else ",", wanted, numeric)
    if suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        try:
            present = pq.read_schema(io.BytesIO(data)).names
        except pa.ArrowInvalid as exc:
            raise BackfillError(f"{path}: not a readable Parquet file: {exc}") from None
        _require_columns(path, wanted, present)
        return pq.read_table(io.BytesIO(data), columns=wanted)
    raise BackfillError(f"{path}: suffix {path.suffix!r} is neither CSV {CSV_SUFFIXES} nor Parquet {PARQUET_SUFFIXES}")


def _read_csv(path: Path, data: bytes, delimiter: str, wanted: list[str], numeric: list[str]) -> pa.Table:
    """`numeric` columns are first parsed as float64 in C ("nan", "inf" included); if any of their
    cells is no number, the file is read again with every cell as text, and each column is then
    converted with replay's rules (recording.cell_values, in layout.py), the odd cells kept for validation."""
    import pyarrow.csv as pacsv

    _require_columns(path, wanted, _csv_header(data, delimiter))

    def read(types: dict[str, pa.DataType]) -> pa.Table:
        return pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted,
                column_types=types,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
            read_options=pacsv.ReadOptions(block_size=16 << 20),
        )

    text = dict.fromkeys(wanted, pa.string())
    try:
        try:
            return read({**text, **dict.fromkeys(numeric, pa.float64())})
        except pa.ArrowInvalid:
            return read(text)  # some numeric cell is text: every cell as text
    except pa.ArrowInvalid as exc:
        raise BackfillError(f"{path}: not a readable CSV file: {exc}") from None


def _csv_header(data: bytes, delimiter: str) -> list[str]:
    first = data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").rstrip("\r")
    return next(csv.reader([first], delimiter=delimiter), [])


def _require_columns(path: Path, wanted: list[str], present: list[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise BackfillError(f"{path}: the mapping names columns {missing} that the file lacks (columns: {present})")


def text_series(column: pa.ChunkedArray) -> pd.Series:
    """A column as recording.read_columns gives CSV cells: text, '' where empty."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.fill_null("").to_pandas()
    return column.to_pandas()


def _parse_times(text: pa.Array, mapping: ReplayMapping, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(time_ms, valid) with replay's rules (recording.parse_times); most rows failing is a mapping error."""
    ts = mapping.timestamp
    missing = text.is_null().to_numpy(zero_copy_only=False)
    values: pd.Series
    if ts.format in ("epoch_ms", "epoch_s") and (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        try:  # the common case, in C: every cell an integer
            values = pc.cast(text, pa.int64()).to_pandas()
        except pa.ArrowInvalid:
            values = text_series(pa.chunked_array([text]))
    else:
        values = text_series(pa.chunked_array([text]))
    try:
        time_ms, valid = parse_times(Column(values, missing), ts, ts.column)
    except ValueError as exc:
        raise BackfillError(f"{path}: {exc}") from None
    bad = np.flatnonzero(~valid)
    if len(valid) and 2 * len(bad) > len(valid):
        first = int(bad[0])
        raise BackfillError(
            f"{path}: timestamp.format={ts.format!r} (timezone={ts.timezone!r}) does not parse {len(bad)} of "
            f"{len(valid)} rows of timestamp.column={ts.column!r}; first: line {first + 2} value "
            f"{text[first].as_py()!r}: fix timestamp.format in the mapping"
        )
    return np.asarray(time_ms, dtype=np.int64), np.asarray(valid, dtype=bool)


def _check_long_metrics(recording: Recording, mapping: ReplayMapping, use_case: UseCaseConfig, path: Path) -> None:
    keys = recording.table.column(mapping.long.metric_column)
    metrics = {long_metric(mapping, k) for k in pc.unique(keys).to_pylist()}
    if len(metrics) > MAX_BATCH_METRICS:
        raise BackfillError(
            f"{path}: long.metric_column={mapping.long.metric_column!r} holds {len(metrics)} metric keys, "
            f"more than a batch carries ({MAX_BATCH_METRICS})"
        )
    check_slots(metrics | use_case.accepted_metrics, path)


def long_metric(mapping: ReplayMapping, key: object) -> str:
    """The metric a long layout's key cell stands for (the mapping's name for it, else the key)."""
    text = "" if key is None else str(key)
    entry = mapping.long.metrics.get(text)
    return text if entry is None else (entry.metric or text)


def check_slots(metrics: set[str], source: object) -> None:
    """Every metric must have a backfill seq slot of its own (raw.backfill_slot)."""
    seen: dict[int, str] = {}
    for metric in sorted(metrics):
        other = seen.setdefault(backfill_slot(metric), metric)
        if other != metric:
            raise BackfillError(
                f"{source}: metrics {other!r} and {metric!r} share the backfill seq slot {backfill_slot(metric)} "
                "(raw.backfill_slot): rename one of them to backfill both"
            )


def where_in_file(file: str, columns: list[str], row: int, column: int) -> str:
    """A sample's place in the file: the file, its line (CSV: the header is line 1) or row (Parquet: from 1), its column."""
    if file.lower().endswith(PARQUET_SUFFIXES):
        return f"{file} row {row + 1} column {columns[column]!r}"
    return f"{file} line {row + 2} column {columns[column]!r}"
