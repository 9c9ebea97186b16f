"""A recording's samples laid out for validation and curated/: a UTC day at a time, each day in curated
order (metric name, time), with where every sample came from (file row and column).

A day's samples are validated in chunks of at most MAX_BATCH_SAMPLES (ingest's largest batch) and
landed as one curated partition; samples without a usable time (a bad timestamp cell, or before
1970) come last, as day None, for validation to refuse with their cell as the time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeloop.cloud.datalake.backfill import DAY_MS
from edgeloop.cloud.datalake.raw import backfill_slot
from edgeloop.device_shims.recording import Column, cell_values

from .plan import BackfillPlan
from .recording import Recording, long_metric, text_series


@dataclass
class Samples:
    """Samples laid out in curated order (metric, time) with where each came from."""

    code: np.ndarray  # int32 index into the file's metric names
    time_ms: np.ndarray  # int64
    value: np.ndarray  # float64 (NaN where `other` holds the cell)
    row: np.ndarray  # int64 file row (0-based, header excluded)
    column: np.ndarray  # int16 index into the file's column names
    other: dict[int, object]  # position -> a cell that is no float (text, None): ingest refuses it

    def __len__(self) -> int:
        return len(self.code)


class Layout:
    """A recording's samples, a UTC day at a time, each day in curated order (metric name, time)."""

    def __init__(self, plan: BackfillPlan, recording: Recording) -> None:
        self.plan = plan
        self.recording = recording
        mapping = plan.mapping
        if mapping.layout == "wide":
            self.columns = [s.column for s in plan.series]
            self.metrics = sorted({s.metric for s in plan.series})
        else:
            self.columns = [mapping.long.value_column]
            keys = recording.table.column(mapping.long.metric_column).combine_chunks()
            self._long_keys = keys
            self.metrics = sorted({long_metric(mapping, k) for k in pc.unique(keys).to_pylist()})
        self.slots = np.array([backfill_slot(m) for m in self.metrics], dtype=np.int64)

    def days(self) -> Iterator[tuple[Samples, int | None]]:
        """(samples of one UTC day, the day's number) in order; day None: samples without a usable
        time (a bad timestamp cell, or before 1970), last."""
        rec = self.recording
        usable = rec.valid & (rec.time_ms >= 0)
        rows = np.flatnonzero(usable)
        times = rec.time_ms[rows]
        if len(times) > 1 and not bool(np.all(times[1:] >= times[:-1])):
            order = np.argsort(times, kind="stable")
            rows, times = rows[order], times[order]
        cells = self._cells(rows)
        days = times // DAY_MS
        cuts = np.flatnonzero(days[1:] != days[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(rows)]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
            if hi > lo:
                yield self._day_samples(cells, rows, times, lo, hi), int(days[lo])
        unusable = np.flatnonzero(~usable)
        if len(unusable):
            yield self._unusable_samples(unusable), None

    # --- cells of the mapped columns, at the rows taken (time order) ------------------------------
    def _cells(self, rows: np.ndarray) -> list[tuple[int, int, np.ndarray, np.ndarray, dict[int, object]]]:
        """Per series: (metric code, column index, present mask, float values, other cells by position)."""
        out = []
        if self.plan.mapping.layout == "wide":
            for index, s in enumerate(self.plan.series):
                present, values, other = numbers(self.recording.table.column(s.column), rows)
                out.append((self.metrics.index(s.metric), index, present, values, other))
        else:
            value_column = self.plan.mapping.long.value_column
            column = self.recording.table.column(value_column)
            _, values, other = numbers(column, rows)
            missing = column.combine_chunks().is_null().to_numpy(zero_copy_only=False)[rows]
            for position in np.flatnonzero(missing).tolist():
                other[position] = None  # long layout: an empty value is a bad reading (as replay)
            codes = self._long_codes(rows)
            for code in range(len(self.metrics)):
                present = codes == code
                out.append((code, 0, present, values, other))
        return out

    def _long_codes(self, rows: np.ndarray) -> np.ndarray:
        """Per row taken: the code of its metric (an empty key cell is the metric "", which ingest refuses)."""
        encoded = pc.fill_null(pc.cast(self._long_keys, pa.string()), "").dictionary_encode()
        lookup = np.array(
            [self.metrics.index(long_metric(self.plan.mapping, k)) for k in encoded.dictionary.to_pylist()],
            dtype=np.int32,
        )
        return lookup[encoded.indices.to_numpy(zero_copy_only=False)][rows]

    def _day_samples(self, cells, rows: np.ndarray, times: np.ndarray, lo: int, hi: int) -> Samples:
        by_metric: dict[int, list] = {}
        for code, column, present, values, cell_other in cells:
            by_metric.setdefault(code, []).append((column, present, values, cell_other))
        parts, other, offset = [], {}, 0
        for code in sorted(by_metric):  # metric codes follow metric names: curated order
            only = by_metric[code][0] if len(by_metric[code]) == 1 else None
            if only is not None and not only[3] and bool(only[1][lo:hi].all()):  # one full column: views
                n = hi - lo
                column_of = np.full(n, only[0], dtype=np.int16)
                parts.append((np.full(n, code, dtype=np.int32), times[lo:hi], only[2][lo:hi], rows[lo:hi], column_of))
                offset += n
                continue
            wheres, columns, values = [], [], []
            for column, present, column_values, cell_other in by_metric[code]:
                where = np.flatnonzero(present[lo:hi]) + lo
                wheres.append(where)
                columns.append(np.full(len(where), column, dtype=np.int16))
                values.append(column_values[where])
                if cell_other:
                    base = offset + sum(len(w) for w in wheres[:-1])
                    for k, position in enumerate(where.tolist()):
                        if position in cell_other:
                            other[base + k] = cell_other[position]
            where = np.concatenate(wheres)
            column_of, value = np.concatenate(columns), np.concatenate(values)
            if len(wheres) > 1:  # several columns carry one metric: merge them in time order
                order = np.argsort(times[where], kind="stable")
                moved = {int(old): new for new, old in enumerate(order.tolist())}
                other = {(offset + moved[k - offset] if k >= offset else k): v for k, v in other.items()}
                where, column_of, value = where[order], column_of[order], value[order]
            parts.append((np.full(len(where), code, dtype=np.int32), times[where], value, rows[where], column_of))
            offset += len(where)
        return concat(parts, other)

    def _unusable_samples(self, unusable: np.ndarray) -> Samples:
        """Samples of rows without a usable time: laid out with their timestamp cell as time (ingest
        refuses a time that is no integer); a time before 1970 is refused here (no backfill seq)."""
        cells = self._cells(unusable)
        parts, other, offset = [], {}, 0
        for code, column, present, values, cell_other in cells:
            where = np.flatnonzero(present)
            parts.append(
                (
                    np.full(len(where), code, dtype=np.int32),
                    np.zeros(len(where), dtype=np.int64),
                    values[where],
                    unusable[where],
                    np.full(len(where), column, dtype=np.int16),
                )
            )
            for k, position in enumerate(where.tolist()):
                if position in cell_other:
                    other[offset + k] = cell_other[position]
            offset += len(where)
        return concat(parts, other)


def numbers(column: pa.ChunkedArray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, object]]:
    """(present, float values, cells that are no float by position) of a column at `rows`.

    Replay's reading (recording.cell_values): an empty cell is no reading; numbers are floats (NaN
    and inf kept, for validation to refuse); other text is kept as text (validation refuses it)."""
    array = column.combine_chunks()
    # every row, in file order (rows are distinct row numbers): no gather needed
    identity = len(rows) == len(array) and bool(np.all(rows[1:] > rows[:-1]))
    if not identity:
        array = array.take(pa.array(rows))
    present = ~array.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_floating(array.type) or pa.types.is_integer(array.type):
        values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        return present, values, {}
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        try:
            values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)  # in C, the common case
            return present, values, {}
        except pa.ArrowInvalid:
            pass  # some cell is no number: replay's rules, cell by cell
    series = text_series(pa.chunked_array([array]))
    cells = cell_values(Column(series, ~present))
    values = np.full(len(cells), np.nan)
    other: dict[int, object] = {}
    for i, cell in enumerate(cells):
        if not present[i]:
            continue
        if isinstance(cell, float):
            values[i] = cell
        else:
            other[i] = cell
    return present, values, other


def concat(parts: list[tuple], other: dict[int, object]) -> Samples:
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Samples(empty.astype(np.int32), empty, empty.astype(float), empty, empty.astype(np.int16), {})
    return Samples(*(np.concatenate([p[i] for p in parts]) for i in range(5)), other=other)


def slice_samples(samples: Samples, start: int, stop: int) -> Samples:
    if start == 0 and stop >= len(samples):
        return samples
    other = {k - start: v for k, v in samples.other.items() if start <= k < stop}
    return Samples(
        samples.code[start:stop],
        samples.time_ms[start:stop],
        samples.value[start:stop],
        samples.row[start:stop],
        samples.column[start:stop],
        other,
    )
