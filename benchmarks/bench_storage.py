"""Storage: curated Parquet -> rollups + context sub-intervals -> 5-minute metric packs, and ingest.

Dataset: 10 lines x 6 months x 10 metrics at 1 Hz (1.56 billion samples; the issue's "~155 M" is
one line's share) in curated Parquet on local disk, in the layout and format compaction writes.
Work is split into (line, month) tasks run by a pool of 2 processes (this machine's cores).

Two timed paths, both ending in 5-minute packs of taxonomy roles written as Parquet:
- full chain: read the month's curated days one at a time, roll them up (1m, then 5m/1h/1d by
  re-aggregation) and store every level as the rollups function does, cut the line's context into
  sub-intervals and 1-minute slices, build the packs;
- pack build (the headline, like Mimir's 70 s, which read pre-computed rollups): the rollups
  function keeps the stored rollups current as data is compacted, so a training run reads the
  stored 1-minute rollups, cuts the context, and builds the packs. Scaling: 1, 3 and 6 months.
Each is timed from the pool's start to the last file written. Peak memory is the largest sum of
the resident set sizes of this process and its workers, sampled every 20 ms.

Baseline, same run: a straightforward pandas loop (one boolean mask + groupby per 5-minute window,
the context looked up per window) against our full chain from curated samples, both on one line's
first week; their packs are checked equal before the ratio is reported.

Ingest: a fresh Lambda-like interpreter importing the handler module from the staged, precompiled
Lambda asset (median of 9 rounds, CPU time; see storage_cold_start.py), as a ratio to a bare
`import boto3` in the same rounds, and the split into third-party packages and edgeloop's own
modules; and one warm invocation of the handler (moto S3 +
IoT in process) on a batch near IoT Core's 128 KB limit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from edgeloop.cloud.datalake.context import KINDS
from edgeloop.cloud.datalake.rollups import SAMPLE_COLUMNS, from_arrow, to_arrow
from edgeloop.cloud.packing.rollup_packs import build_line_packs, packs_from_rollups
from edgeloop.functions.rollups.data_access import read_parquet_whole, rollup_key
from edgeloop.schemas import ContextInterval, ContextKind, load_use_case

from .storage_data import USE_CASE, Dataset, ensure_dataset

LINES, MONTHS, WORKERS = 10, 6, 2
SCALING_MONTHS = (1, 3, 6)
WINDOW_MS = 5 * 60_000


def run() -> dict[str, tuple[float, str]]:
    dataset = ensure_dataset(LINES, MONTHS, workers=WORKERS)
    results: dict[str, tuple[float, str]] = {}
    stored = Path(tempfile.mkdtemp(prefix="edgeloop-bench-storage-"))
    try:
        chain = timed_tasks(dataset, MONTHS, _full_chain_task, stored)
        _report("full chain", MONTHS, chain)
        results["storage.full_chain_10lines_6months_s"] = (chain["seconds"], "s")
        results["storage.full_chain_peak_rss_gb"] = (chain["peak_rss_bytes"] / 1e9, "GB")
        results["storage.full_chain_samples_per_s"] = (chain["samples"] / chain["seconds"], "samples/s")
        results["storage.samples"] = (float(chain["samples"]), "samples")
        seconds = {}
        for months in SCALING_MONTHS:
            build = timed_tasks(dataset, months, _pack_task, stored)
            _report("pack build", months, build)
            seconds[months] = build["seconds"]
            if months == MONTHS:
                if build["samples"] != chain["samples"] or build["packs"] != chain["packs"]:
                    raise AssertionError(f"the two paths disagree: {build} vs {chain}")
                results["storage.pack_build_10lines_6months_s"] = (build["seconds"], "s")
                results["storage.peak_rss_gb"] = (build["peak_rss_bytes"] / 1e9, "GB")
                results["storage.packs"] = (float(build["packs"]), "packs")
    finally:
        shutil.rmtree(stored, ignore_errors=True)
    results["storage.pack_build_1month_s"] = (seconds[1], "s")
    results["storage.pack_build_3months_s"] = (seconds[3], "s")
    # Linear cost: seconds per month of data should not grow with the span.
    results["storage.cost_per_month_ratio_6_vs_1"] = ((seconds[6] / 6) / seconds[1], "x")
    results.update(pandas_comparison(dataset))
    results.update(ingest_figures())
    return results


def _report(path: str, months: int, run: dict) -> None:
    print(
        f"   {path}, {months} month(s): {run['samples']:,} samples, {run['packs']:,} packs in {run['seconds']:.1f} s,"
        f" peak {run['peak_rss_bytes'] / 1e9:.2f} GB"
    )


# --- the pack build --------------------------------------------------------------------------------


def timed_tasks(dataset: Dataset, months: int, task, stored: Path) -> dict:
    """Run `task(dataset, line, days of one month, stored)` for every line and month; time the pool."""
    by_month: dict[str, list[date]] = {}
    for day in dataset.days_of_months(months):
        by_month.setdefault(f"{day:%Y-%m}", []).append(day)
    tasks = [(line, tuple(month_days)) for line in dataset.lines for month_days in by_month.values()]
    with _RssSampler() as rss:
        start = time.perf_counter()
        with ProcessPoolExecutor(WORKERS) as pool:
            done = list(pool.map(task, [dataset] * len(tasks), *zip(*tasks), [stored] * len(tasks)))
        elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "samples": sum(samples for samples, _ in done),
        "packs": sum(packs for _, packs in done),
        "peak_rss_bytes": rss.peak,
    }


def _full_chain_task(dataset: Dataset, line_id: str, days: tuple[date, ...], stored: Path) -> tuple[int, int]:
    month = f"{days[0]:%Y-%m}"
    result = build_line_packs(
        _read_days(dataset, line_id, days),
        _intervals_within(dataset, line_id, days),
        line_id=line_id,
        use_case=load_use_case(USE_CASE),
    )
    for resolution, frame in result.levels.items():
        _write_table(to_arrow(frame), stored / rollup_key(resolution, line_id, month))
    _write_packs(result.packs, stored, line_id, month, "full-chain")
    return result.samples, len(result.packs)


def _pack_task(dataset: Dataset, line_id: str, days: tuple[date, ...], stored: Path) -> tuple[int, int]:
    month = f"{days[0]:%Y-%m}"
    rollups = from_arrow(read_parquet_whole(stored / rollup_key("1m", line_id, month)))
    _, packs = packs_from_rollups(
        rollups, _intervals_within(dataset, line_id, days), line_id=line_id, use_case=load_use_case(USE_CASE)
    )
    _write_packs(packs, stored, line_id, month, "from-rollups")
    return int(rollups["count"].sum()), len(packs)


def _write_packs(packs: pd.DataFrame, stored: Path, line_id: str, month: str, run: str) -> None:
    path = stored / "metric_packs" / f"run={run}" / f"line={line_id}" / f"month={month}" / "packs.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    packs.assign(line_id=line_id).to_parquet(path, compression="zstd", index=False)


def _write_table(table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def _read_days(dataset: Dataset, line_id: str, days: tuple[date, ...]):
    for day in days:
        yield read_parquet_whole(dataset.day_path(line_id, day), columns=list(SAMPLE_COLUMNS))


def _intervals_within(dataset: Dataset, line_id: str, days: tuple[date, ...]) -> list[ContextInterval]:
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
    end = start + timedelta(days=len(days))
    return [i for i in _line_intervals(dataset, line_id) if i.start < end and i.end > start]


@cache  # per worker process: parsed once, used by each month of the line
def _line_intervals(dataset: Dataset, line_id: str) -> tuple[ContextInterval, ...]:
    return tuple(dataset.intervals(line_id))


class _RssSampler:
    """Largest sum of VmRSS over this process and its children, sampled every 20 ms."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            pids = [os.getpid(), *_children(os.getpid())]
            self.peak = max(self.peak, sum(_rss_bytes(pid) for pid in pids))


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass  # the process ended between listing and reading
    return 0


# --- baseline: a pandas loop per window --------------------------------------------------------


def pandas_comparison(dataset: Dataset) -> dict[str, tuple[float, str]]:
    line_id, days = dataset.lines[0], dataset.days[:7]
    intervals = _intervals_within(dataset, line_id, days)
    use_case = load_use_case(USE_CASE)

    start = time.perf_counter()
    ours = build_line_packs(_read_days(dataset, line_id, days), intervals, line_id=line_id, use_case=use_case).packs
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    theirs = pandas_loop_packs(dataset, line_id, days, intervals)
    theirs_s = time.perf_counter() - start

    _check_same_packs(ours, theirs, use_case, line_id)
    print(f"   one line-week: ours {ours_s:.2f} s, pandas loop {theirs_s:.1f} s ({len(ours)} packs each)")
    return {
        "storage.pandas_loop_1line_1week_s": (theirs_s, "s"),
        "storage.ours_1line_1week_s": (ours_s, "s"),
        "storage.speedup_vs_pandas_loop": (theirs_s / ours_s, "x"),
    }


def pandas_loop_packs(dataset: Dataset, line_id: str, days, intervals: list[ContextInterval]) -> pd.DataFrame:
    """What one would write first: for every 5-minute window, mask the samples and group them."""
    samples = pd.concat(
        [pd.read_parquet(dataset.day_path(line_id, day), columns=list(SAMPLE_COLUMNS)) for day in days],
        ignore_index=True,
    )
    first = int(datetime.combine(days[0], datetime.min.time(), tzinfo=UTC).timestamp() * 1000)
    rows = []
    for window_start in range(first, first + len(days) * 86_400_000, WINDOW_MS):
        window_end = window_start + WINDOW_MS
        context = _window_context(intervals, window_start, window_end)
        if context is None:
            continue
        window = samples[(samples.time_ms >= window_start) & (samples.time_ms < window_end)]
        if window.empty:
            continue
        stats = window.groupby("metric")["value"].agg(["count", "mean", "min", "max", lambda v: v.std(ddof=0)])
        stats.columns = ["count", "mean", "min", "max", "std"]
        row = {"window_start_ms": window_start, **context}
        for metric, values in stats.iterrows():
            row.update({f"{metric}__{stat}": values[stat] for stat in stats.columns})
        rows.append(row)
    return pd.DataFrame(rows)


def _window_context(intervals: list[ContextInterval], start_ms: int, end_ms: int) -> dict | None:
    """The interval id per kind if each kind is constant over the window and a run is active."""
    start = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    end = datetime.fromtimestamp(end_ms / 1000, tz=UTC)
    context = {}
    for kind in KINDS:
        touching = [i for i in intervals if i.kind == kind and i.start < end and i.end > start]
        if len(touching) > 1 or (touching and not (touching[0].start <= start and touching[0].end >= end)):
            return None
        context[f"{kind.value}_id"] = touching[0].interval_id if touching else None
    return context if context[f"{ContextKind.RUN.value}_id"] else None


def _check_same_packs(ours: pd.DataFrame, theirs: pd.DataFrame, use_case, line_id: str) -> None:
    """Same windows, same runs, and the same mean of every metric (ours are in role units)."""
    ours = ours[ours.run_id.notna()].reset_index(drop=True)
    if list(ours.window_start_ms) != list(theirs.window_start_ms) or list(ours.run_id) != list(theirs.run_id):
        raise AssertionError(f"baseline and ours disagree on the packs: {len(theirs)} vs {len(ours)}")
    roles = use_case.roles_for_line(line_id)
    for key, role in roles.items():
        expected = theirs[f"{key}__mean"].to_numpy() * role.scale + role.offset
        if not np.allclose(ours[f"{role.role}__mean"].to_numpy(), expected, rtol=1e-9):
            raise AssertionError(f"baseline and ours disagree on the mean of {key}")


# --- ingest ------------------------------------------------------------------------------------------


def ingest_figures() -> dict[str, tuple[float, str]]:
    from .ingest_invoke import samples_per_s_on_a_full_batch
    from .storage_cold_start import cold_import_figures

    imports = cold_import_figures()
    return {
        "ingest.cold_import_ms": (imports["handler_ms"], "ms"),
        "ingest.cold_import_boto3_ms": (imports["boto3_ms"], "ms"),
        "ingest.cold_import_ratio_vs_boto3": (imports["ratio"], "x"),
        "ingest.cold_import_floor_ratio_vs_boto3": (imports["floor_ratio"], "x"),
        "ingest.cold_import_third_party_ms": (imports["third_party_ms"], "ms"),
        "ingest.cold_import_own_ms": (imports["own_ms"], "ms"),
        "ingest.samples_per_s": (samples_per_s_on_a_full_batch(), "samples/s"),
    }
