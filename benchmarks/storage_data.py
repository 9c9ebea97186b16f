"""The storage benchmark's dataset: curated Parquet for N lines x D days of 10 metrics at 1 Hz,
plus each line's context intervals (runs with spec limits, line states, shifts, work orders).

Written once into benchmarks/.data/ (not committed) in the exact curated layout and format
compaction writes (`curated/line=<id>/event_date=YYYY-MM-DD/part-*.parquet`, CURATED_SCHEMA,
sorted by (thing_name, metric, time_ms)), and reused while the generator version is the same.

Values are AR(1) noise around a per-run level for each metric, rounded to the sensor's resolution,
so Parquet compresses them as it would real readings; timestamps jitter by up to 50 ms.
The line `line-us-1` sends imperial units, exercising the taxonomy's conversions.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from edgeloop.cloud.datalake.curated import CURATED_SCHEMA, curated_parquet_bytes
from edgeloop.schemas import ContextInterval, ContextKind, SpecLimits, load_use_case, names

GENERATOR_VERSION = 1
DATA_ROOT = Path(__file__).resolve().parent / ".data"
FIRST_DAY = date(2026, 1, 1)
DAY_MS = 86_400_000
USE_CASE = "extrusion"
# metric -> (typical level, AR(1) std, decimals)
LEVELS = {
    "speed": (180.0, 0.5, 2),
    "screw_rpm": (64.0, 0.3, 2),
    "temp_die": (212.0, 0.4, 2),
    "temp_flange": (201.0, 0.4, 2),
    "pressure": (205.0, 1.5, 2),
    "hot_od_x": (3.99, 0.004, 4),
    "hot_od_y": (3.97, 0.004, 4),
    "cold_od_x": (3.80, 0.003, 4),
    "cold_od_y": (3.80, 0.003, 4),
    "cold_od_average": (3.80, 0.002, 4),
}
IMPERIAL = {"temp_die": (1.8, 32.0), "pressure": (1 / 0.0689475729, 0.0)}  # °C -> °F, bar -> psi


@dataclass(frozen=True)
class Dataset:
    root: Path
    lines: tuple[str, ...]
    days: tuple[date, ...]

    def day_path(self, line_id: str, day: date) -> Path:
        return self.root / names.CURATED_PREFIX / f"line={line_id}" / f"event_date={day.isoformat()}" / "part-0.parquet"

    def days_of_months(self, months: int) -> tuple[date, ...]:
        """The days of the first `months` calendar months of the dataset."""
        end = _months_after(self.days[0], months)
        return tuple(d for d in self.days if d < end)

    def intervals(self, line_id: str) -> list[ContextInterval]:
        path = self.root / names.CONTEXT_PREFIX / f"line={line_id}" / "intervals.jsonl"
        return [ContextInterval.model_validate_json(line) for line in path.read_text().splitlines()]


def line_ids(count: int) -> tuple[str, ...]:
    return (*(f"line-{i}" for i in range(1, count)), "line-us-1")[:count]


def ensure_dataset(lines: int, months: int, *, workers: int = 2) -> Dataset:
    """The dataset for `lines` lines over the first `months` months of 2026, generated if missing."""
    days = _days(months)
    dataset = Dataset(DATA_ROOT / f"storage-v{GENERATOR_VERSION}", line_ids(lines), days)
    missing = [(line, day) for line in dataset.lines for day in days if not dataset.day_path(line, day).exists()]
    for line in dataset.lines:
        _write_intervals(dataset, line)
    if missing:
        print(f"   generating {len(missing)} line-days of curated Parquet under {dataset.root} (once)", flush=True)
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_day, [dataset] * len(missing), *zip(*missing), chunksize=8))
    return dataset


def _days(months: int) -> tuple[date, ...]:
    end = _months_after(FIRST_DAY, months)
    return tuple(FIRST_DAY + timedelta(days=i) for i in range((end - FIRST_DAY).days))


def _months_after(first: date, months: int) -> date:
    """The first day of the month `months` calendar months after `first`'s month."""
    index = first.month - 1 + months
    return date(first.year + index // 12, index % 12 + 1, 1)


# --- context ---------------------------------------------------------------------------------------


def schedule(line_id: str, days: tuple[date, ...]) -> list[ContextInterval]:
    """Runs of 2-8 h separated by 20-minute changeovers, 8-hour shifts, a work order per 3 runs."""
    rng = np.random.default_rng(_seed(line_id, 0))
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
    end = start + timedelta(days=len(days))
    intervals: list[ContextInterval] = []
    t, run_number = start, 0
    order_start = start
    while t < end:
        run_end = min(end, t + timedelta(minutes=int(rng.integers(120, 480))))
        level = 3.80 + 0.05 * int(rng.integers(-2, 3))
        spec = SpecLimits(target_metric="cold_od_average", lower=round(level - 0.05, 4), upper=round(level + 0.05, 4))
        run_id = f"{line_id}-run-{run_number:05d}"
        intervals.append(_interval(ContextKind.RUN, run_id, line_id, t, run_end, f"cable-{level:.2f}", spec))
        intervals.append(_interval(ContextKind.STATE, f"{run_id}-running", line_id, t, run_end, "running"))
        run_number += 1
        if run_number % 3 == 0 or run_end >= end:
            intervals.append(
                _interval(
                    ContextKind.WORK_ORDER, f"{line_id}-wo-{run_number // 3:05d}", line_id, order_start, run_end, "wo"
                )
            )
            order_start = run_end
        t = min(end, run_end + timedelta(minutes=20))
        if t > run_end:
            intervals.append(_interval(ContextKind.STATE, f"{run_id}-changeover", line_id, run_end, t, "changeover"))
    shift = start
    while shift < end:
        name = ("night", "early", "late")[(shift.hour // 8) % 3]
        intervals.append(
            _interval(
                ContextKind.SHIFT, f"{line_id}-{shift:%Y%m%d%H}", line_id, shift, shift + timedelta(hours=8), name
            )
        )
        shift += timedelta(hours=8)
    return intervals


def _interval(kind, interval_id, line_id, start, end, value, spec=None) -> ContextInterval:
    return ContextInterval(
        kind=kind, interval_id=interval_id, line_id=line_id, start=start, end=end, value=value, spec=spec
    )


def _write_intervals(dataset: Dataset, line_id: str) -> None:
    path = dataset.root / names.CONTEXT_PREFIX / f"line={line_id}" / "intervals.jsonl"
    if path.exists() and path.stat().st_size and _covers(path, dataset.days):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(i.model_dump_json() + "\n" for i in schedule(line_id, dataset.days)))


def _covers(path: Path, days: tuple[date, ...]) -> bool:
    last = json.loads(path.read_text().splitlines()[-1])
    return datetime.fromisoformat(last["end"]).date() >= days[-1]


# --- samples ---------------------------------------------------------------------------------------


def _write_day(dataset: Dataset, line_id: str, day: date) -> None:
    path = dataset.day_path(line_id, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(curated_parquet_bytes(day_table(line_id, day)))
    tmp.rename(path)  # a crashed generation never leaves a partial part


def day_table(line_id: str, day: date) -> pa.Table:
    """One line-day of curated rows, sorted by (thing_name, metric, time_ms)."""
    rng = np.random.default_rng(_seed(line_id, day.toordinal()))
    day_ms = int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp() * 1000)
    n = 86_400
    time_ms = day_ms + np.arange(n, dtype=np.int64) * 1000 + rng.integers(0, 50, n)
    metrics = sorted(load_use_case(USE_CASE).metrics)
    values = [_readings(rng, metric, line_id, n) for metric in metrics]
    rows = n * len(metrics)
    thing = f"gw-{line_id}"
    return pa.table(
        {
            "thing_name": pa.DictionaryArray.from_arrays(np.zeros(rows, np.int32), [thing]).cast(pa.string()),
            "line_id": pa.DictionaryArray.from_arrays(np.zeros(rows, np.int32), [line_id]).cast(pa.string()),
            "metric": pa.DictionaryArray.from_arrays(
                np.repeat(np.arange(len(metrics), dtype=np.int32), n), metrics
            ).cast(pa.string()),
            "time_ms": np.tile(time_ms, len(metrics)),
            "value": np.concatenate(values),
            "seq": np.arange(rows, dtype=np.int64) + day.toordinal() * rows,
            "ingest_time_ms": np.tile(time_ms, len(metrics)) + rng.integers(200, 5_000, rows),
        },
        schema=CURATED_SCHEMA,
    )


def _readings(rng: np.random.Generator, metric: str, line_id: str, n: int) -> np.ndarray:
    level, sigma, decimals = LEVELS[metric]
    a = 0.995  # AR(1) over seconds: slow drifts, as process values have
    values = level + _ar1(rng.normal(0.0, sigma * np.sqrt(1 - a * a), n), a)
    if line_id.startswith("line-us") and metric in IMPERIAL:
        scale, offset = IMPERIAL[metric]
        values = values * scale + offset
    return np.round(values, decimals)


def _ar1(noise: np.ndarray, a: float, block: int = 1_000) -> np.ndarray:
    """y_k = a y_(k-1) + e_k, in blocks: y_k = a^k (y_0 + sum_(j<=k) e_j / a^j) stays finite per block."""
    out = np.empty_like(noise)
    y = 0.0
    for start in range(0, len(noise), block):
        e = noise[start : start + block]
        powers = a ** np.arange(1, len(e) + 1)
        out[start : start + len(e)] = powers * (y + np.cumsum(e / powers))
        y = out[start + len(e) - 1]
    return out


def _seed(line_id: str, part: int) -> list[int]:
    return [int.from_bytes(line_id.encode(), "little") % 2**32, part]
