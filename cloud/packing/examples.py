"""Training examples of a line: Metric Packer -> Labeler -> Feature Extractor (Mímir).

Built from the line's curated samples and context intervals by the metric packer function (which
stores them, cloud/datalake/packs.py) and by the training pipeline's dataset step.

For each production run of a line (a `run` context interval with spec limits, or with `limits`
intervals inside it):
1. packer: align the run's samples onto the use case's grid (`align_to_grid`, period =
   sample_period_s, max_gap = 5 periods) and cut packs of pack_window_s every example_stride_s
   from the run's start, keeping packs that lie wholly inside the run;
2. labeler: label each pack from the target metric's raw samples after it (labels.py), and class
   the label against the spec limits in force at the label's time; the label is a level in either
   `label.mode` (change mode subtracts the current value only for fitting: labels.training_labels);
3. feature extractor: `pack_features` of each kept pack (feature_table.py).

Limits and states come from the line's timeline of sub-intervals (cloud/datalake/context.py
`sub_intervals`, so overlaps resolve as everywhere else):
- the label's time is window_end + horizon_s (the start of the label window, the time a gateway's
  prediction of the pack carries); the limits in force then are the active `limits` interval's,
  else the run's own. They may move within a run: spec_lower / spec_upper are per example. A pack
  with no limits at its label's time is dropped (`dropped_no_spec`).
- `UseCaseConfig.productive_states` names the machine states (`state` interval values) a pack
  may be taken in: a pack is used only if the line is productive from its window's start to its
  label window's end. A moment without any active state interval counts as productive (a line
  that publishes no states trains on everything, as before states were used). Packs overlapping
  another state are left out of the examples and of the review queue, and counted
  (`excluded_non_productive`).

Packs whose label window lies inside the run but holds too sparse a measurement keep their features
in `ExampleBuild.unlabeled` (label NaN, no class): the review queue (label_review.py)
proposes labels for them. `examples` holds only measured labels.

Only samples inside the run are aligned, so no pack forward-fills a value across a run boundary.
Work is numpy-vectorised per run (packs are stacked with stride tricks, in bounded chunks).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd

from edgeloop.cloud.datalake.context import EPOCH, sub_intervals, to_ms
from edgeloop.cloud.packing.feature_table import CHUNK_PACKS, extract_features
from edgeloop.cloud.packing.incremental import pack_line
from edgeloop.cloud.packing.labels import classify_between, label_packs
from edgeloop.model_runtime.alignment import MAX_GAP_PERIODS, align_to_grid
from edgeloop.schemas import ContextInterval, ContextKind, LabelSource, UseCaseConfig
from edgeloop.schemas.training import EXAMPLE_META_COLUMNS

META_COLUMNS = EXAMPLE_META_COLUMNS


@dataclass
class PackStats:
    """What happened to the packs; the handler reports these as metrics."""

    runs: int = 0
    runs_without_spec: int = 0  # runs with no spec limits of their own and no limits interval inside them
    packs_cut: int = 0
    dropped_label_outside_run: int = 0
    # label window inside the run, but the line not productive from the pack's start to the label's end
    excluded_non_productive: int = 0
    dropped_no_spec: int = 0  # productive, but no limits in force at the label's time
    dropped_label_too_sparse: int = 0
    dropped_empty: int = 0
    examples: int = 0
    unlabeled: int = 0  # packs among dropped_label_too_sparse kept with features for semi-automatic labels

    def add(self, other: PackStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class ExampleBuild:
    examples: pd.DataFrame
    stats: PackStats = field(default_factory=PackStats)
    unlabeled: pd.DataFrame | None = None  # same columns as examples; label NaN, label_class/source None
    runs_packed: int = 0  # runs packed by this build (incremental.py: the others were stored already)


@dataclass(frozen=True)
class Grid:
    """The use case's sample grid in steps: period, steps per pack, steps between packs."""

    period_ms: int
    pack_steps: int
    stride_steps: int

    @classmethod
    def of(cls, use_case: UseCaseConfig) -> Grid:
        period_ms = round(use_case.sample_period_s * 1000)
        return cls(
            period_ms=period_ms,
            pack_steps=_whole_steps("pack_window_s", use_case.pack_window_s, period_ms),
            stride_steps=_whole_steps("example_stride_s", use_case.example_stride_s, period_ms),
        )


@dataclass(frozen=True)
class RunPacks:
    """A run aligned onto the grid, and where its packs start (in grid steps from the run's start)."""

    grid: np.ndarray  # float64 (n_run_steps, n_metrics)
    start_steps: np.ndarray  # int64 (n_packs,)
    start_ms: int
    pack_steps: int
    period_ms: int

    @property
    def window_start_ms(self) -> np.ndarray:
        return self.start_ms + self.start_steps * self.period_ms

    @property
    def window_end_ms(self) -> np.ndarray:
        return self.window_start_ms + self.pack_steps * self.period_ms

    def windows(self, which: np.ndarray) -> np.ndarray:
        """The selected packs stacked as (n, pack_steps, n_metrics), from a strided view."""
        view = np.lib.stride_tricks.sliding_window_view(self.grid, self.pack_steps, axis=0)
        return view[self.start_steps[which]].swapaxes(1, 2)

    def empty_packs(self) -> np.ndarray:
        """True per pack when no metric has any value in it."""
        has_data = np.concatenate([[0], np.cumsum(~np.isnan(self.grid).all(axis=1))])
        return has_data[self.start_steps + self.pack_steps] - has_data[self.start_steps] == 0


def cut_run_packs(
    time_ms: np.ndarray,
    metric_index: np.ndarray,
    values: np.ndarray,
    *,
    start_ms: int,
    end_ms: int,
    use_case: UseCaseConfig,
) -> RunPacks:
    """Packer: align a run's samples (metric_index into use_case.metrics) and place its packs."""
    grid_spec = Grid.of(use_case)
    n_run_steps = max((end_ms - start_ms) // grid_spec.period_ms, 0)
    grid = align_to_grid(
        time_ms,
        metric_index,
        values,
        n_metrics=len(use_case.metrics),
        start_ms=start_ms,
        n_steps=n_run_steps,
        period_ms=grid_spec.period_ms,
        max_gap_ms=MAX_GAP_PERIODS * grid_spec.period_ms,
    )
    n_packs = max((n_run_steps - grid_spec.pack_steps) // grid_spec.stride_steps + 1, 0)
    return RunPacks(
        grid=grid,
        start_steps=np.arange(n_packs, dtype=np.int64) * grid_spec.stride_steps,
        start_ms=start_ms,
        pack_steps=grid_spec.pack_steps,
        period_ms=grid_spec.period_ms,
    )


def build_examples(curated: pd.DataFrame, intervals: list[ContextInterval], use_case: UseCaseConfig) -> pd.DataFrame:
    """Labeled, featurized packs of every run in `intervals` (see the module doc for the columns)."""
    return assemble_examples(curated, intervals, use_case).examples


def assemble_examples(
    curated: pd.DataFrame,
    intervals: list[ContextInterval],
    use_case: UseCaseConfig,
    runs: Collection[str] | None = None,
) -> ExampleBuild:
    """Examples of every run in `intervals` (only those whose interval_id is in `runs`, when given;
    limits and states still come from all of `intervals`)."""
    samples = _Samples.of(curated, use_case)
    for interval in intervals:
        if interval.spec is not None and interval.spec.target_metric != use_case.target_metric:
            raise ValueError(
                f"{interval.kind.value} {interval.interval_id!r} has spec.target_metric={interval.spec.target_metric!r}, "
                f"but use case {use_case.use_case!r} predicts {use_case.target_metric!r}"
            )
    timelines = {line_id: LineTimeline.of(intervals, line_id, use_case) for line_id in {i.line_id for i in intervals}}
    stats = PackStats()
    frames, unlabeled_frames = [], []
    for run in sorted((i for i in intervals if i.kind is ContextKind.RUN), key=lambda i: (i.line_id, i.start)):
        if runs is not None and run.interval_id not in runs:
            continue
        stats.runs += 1
        timeline = timelines[run.line_id]
        if run.spec is None and not timeline.has_limits_between(to_ms(run.start), to_ms(run.end)):
            stats.runs_without_spec += 1
            continue
        frame, unlabeled_frame, run_stats = _run_examples(samples, run, timeline, use_case)
        stats.add(run_stats)
        frames.append(frame)
        unlabeled_frames.append(unlabeled_frame)
    examples = pd.concat(frames, ignore_index=True) if frames else _empty_examples(use_case)
    unlabeled = (
        pd.concat(unlabeled_frames, ignore_index=True) if unlabeled_frames else _unlabeled(_empty_examples(use_case))
    )
    stats.examples = len(examples)
    stats.unlabeled = len(unlabeled)
    return ExampleBuild(examples=examples, stats=stats, unlabeled=unlabeled)


def build_line_examples(bucket: str, line_id: str, use_case: UseCaseConfig) -> pd.DataFrame:
    """A line's examples from curated data and context, as stored in packs/line=<line>/examples.parquet."""
    return build_line_examples_with_stats(bucket, line_id, use_case).examples


def build_line_examples_with_stats(bucket: str, line_id: str, use_case: UseCaseConfig) -> ExampleBuild:
    """The line's examples and unlabeled packs, packing only the runs that changed since the last
    build (reading only their curated days) and storing the result (incremental.py)."""
    packs = pack_line(bucket, line_id, use_case, assemble_examples)
    return ExampleBuild(
        examples=packs.examples,
        stats=PackStats(**packs.stats),
        unlabeled=packs.unlabeled,
        runs_packed=packs.runs_packed,
    )


# --- limits and states over time ----------------------------------------------------------------


@dataclass(frozen=True)
class LineTimeline:
    """What a line's context says per moment, as sorted arrays: the limits interval in force, and the
    spans in which the line is not productive (a state outside use_case.productive_states)."""

    start_ms: np.ndarray  # int64 per sub-interval, sorted, non-overlapping
    end_ms: np.ndarray
    limits_lower: np.ndarray  # float64 per sub-interval, NaN where no limits interval is active
    limits_upper: np.ndarray
    idle_start_ms: np.ndarray  # int64 per merged non-productive span, sorted, disjoint
    idle_end_ms: np.ndarray

    @classmethod
    def of(cls, intervals: list[ContextInterval], line_id: str, use_case: UseCaseConfig) -> LineTimeline:
        subs = sub_intervals((i for i in intervals if i.line_id == line_id), line_id)
        limited = [ContextKind.LIMITS in s.contexts and s.spec is not None for s in subs]
        idle: list[list[int]] = []
        for sub in subs:
            if use_case.is_productive_state(sub.value(ContextKind.STATE)):
                continue
            start, end = to_ms(sub.start), to_ms(sub.end)
            if idle and idle[-1][1] == start:
                idle[-1][1] = end
            else:
                idle.append([start, end])
        return cls(
            start_ms=np.array([to_ms(s.start) for s in subs], dtype=np.int64),
            end_ms=np.array([to_ms(s.end) for s in subs], dtype=np.int64),
            limits_lower=np.array([s.spec.lower if on else np.nan for s, on in zip(subs, limited)], dtype=np.float64),
            limits_upper=np.array([s.spec.upper if on else np.nan for s, on in zip(subs, limited)], dtype=np.float64),
            idle_start_ms=np.array([span[0] for span in idle], dtype=np.int64),
            idle_end_ms=np.array([span[1] for span in idle], dtype=np.int64),
        )

    def limits_at(self, time_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) of the limits interval active at each time; NaN where none is."""
        time_ms = np.asarray(time_ms, dtype=np.int64)
        row = np.searchsorted(self.start_ms, time_ms, side="right") - 1
        inside = (row >= 0) & (time_ms < np.append(self.end_ms, 0)[row])
        row = np.where(inside, row, len(self.start_ms))
        return np.append(self.limits_lower, np.nan)[row], np.append(self.limits_upper, np.nan)[row]

    def has_limits_between(self, start_ms: int, end_ms: int) -> bool:
        active = ~np.isnan(self.limits_lower) & (self.start_ms < end_ms) & (self.end_ms > start_ms)
        return bool(active.any())

    def non_productive(self, start_ms: np.ndarray, end_ms: np.ndarray) -> np.ndarray:
        """True per span [start_ms, end_ms) that overlaps a non-productive state."""
        start_ms, end_ms = np.asarray(start_ms, dtype=np.int64), np.asarray(end_ms, dtype=np.int64)
        # spans are disjoint and sorted: the last one starting before end_ms ends the latest of those
        last = np.searchsorted(self.idle_start_ms, end_ms, side="left") - 1
        return (last >= 0) & (np.append(self.idle_end_ms, np.iinfo(np.int64).min)[last] > start_ms)


# --- one run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Samples:
    """Curated rows as arrays, restricted to the use case's metrics and sorted by time."""

    line_id: np.ndarray
    time_ms: np.ndarray
    metric_index: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, curated: pd.DataFrame, use_case: UseCaseConfig) -> _Samples:
        missing = {"line_id", "metric", "time_ms", "value"} - set(curated.columns)
        if missing:
            raise ValueError(f"curated frame lacks columns {sorted(missing)}; it has {list(curated.columns)}")
        # Predictions the gateways publish back (target__predicted) are not inputs: drop them here.
        index = curated["metric"].map({name: i for i, name in enumerate(use_case.metrics)})
        rows = curated.assign(metric_index=index)[index.notna()].sort_values("time_ms", kind="stable")
        return cls(
            line_id=rows["line_id"].to_numpy(dtype=object),
            time_ms=rows["time_ms"].to_numpy(dtype=np.int64),
            metric_index=rows["metric_index"].to_numpy(dtype=np.int64),
            values=rows["value"].to_numpy(dtype=np.float64),
        )

    def of_run(self, line_id: str, start_ms: int, end_ms: int) -> _Samples:
        lo, hi = np.searchsorted(self.time_ms, [start_ms, end_ms], side="left")
        in_line = self.line_id[lo:hi] == line_id
        return _Samples(
            *(column[lo:hi][in_line] for column in (self.line_id, self.time_ms, self.metric_index, self.values))
        )


def _run_examples(
    samples: _Samples, run: ContextInterval, timeline: LineTimeline, use_case: UseCaseConfig
) -> tuple[pd.DataFrame, pd.DataFrame, PackStats]:
    start_ms, end_ms = to_ms(run.start), to_ms(run.end)
    in_run = samples.of_run(run.line_id, start_ms, end_ms)
    packs = cut_run_packs(
        in_run.time_ms, in_run.metric_index, in_run.values, start_ms=start_ms, end_ms=end_ms, use_case=use_case
    )
    is_target = in_run.metric_index == use_case.metrics.index(use_case.target_metric)
    labels = label_packs(
        packs.window_end_ms, in_run.time_ms[is_target], in_run.values[is_target], run_end_ms=end_ms, use_case=use_case
    )
    empty = packs.empty_packs()
    label_time_ms = packs.window_end_ms + use_case.horizon_s * 1000
    label_end_ms = label_time_ms + use_case.label_window_s * 1000
    label_inside_run = label_end_ms <= end_ms
    # Each pack that is cut lands in exactly one count, in this order (the labeler's counts of
    # outside_run and too_sparse are over all packs; here they are over the packs still in question).
    productive = ~timeline.non_productive(packs.window_start_ms, label_end_ms)
    lower, upper = _limits_at(label_time_ms, run, timeline)
    has_spec = ~np.isnan(lower)
    usable = label_inside_run & productive & has_spec
    keep = np.flatnonzero(usable & labels.keep & ~empty)
    # usable but not kept for a label: the labeler found too sparse a measurement (labels.py)
    unlabeled = np.flatnonzero(usable & ~labels.keep & ~empty)
    stats = PackStats(
        packs_cut=len(packs.start_steps),
        dropped_label_outside_run=int((~label_inside_run).sum()),
        excluded_non_productive=int((label_inside_run & ~productive).sum()),
        dropped_no_spec=int((label_inside_run & productive & ~has_spec).sum()),
        dropped_label_too_sparse=int((usable & ~labels.keep).sum()),
        dropped_empty=int((usable & labels.keep & empty).sum()),
    )

    def frame_of(mask: np.ndarray) -> pd.DataFrame:
        return _examples_frame(
            run,
            packs.window_start_ms[mask],
            packs.window_end_ms[mask],
            labels.value[mask],
            _features(packs, mask, use_case),
            use_case,
            spec_lower=lower[mask],
            spec_upper=upper[mask],
        )

    examples, unlabeled_examples = frame_of(keep), frame_of(unlabeled)
    return examples, _unlabeled(unlabeled_examples), stats


def _limits_at(
    label_time_ms: np.ndarray, run: ContextInterval, timeline: LineTimeline
) -> tuple[np.ndarray, np.ndarray]:
    """Per pack, the limits in force at its label's time: the active limits interval's, else the run's."""
    lower, upper = timeline.limits_at(label_time_ms)
    from_run = np.isnan(lower)
    if run.spec is not None:
        lower, upper = np.where(from_run, run.spec.lower, lower), np.where(from_run, run.spec.upper, upper)
    return lower, upper


def _features(packs: RunPacks, which: np.ndarray, use_case: UseCaseConfig) -> np.ndarray:
    return np.concatenate(
        [
            extract_features(packs.windows(which[i : i + CHUNK_PACKS]), use_case)
            for i in range(0, len(which), CHUNK_PACKS)
        ]
        or [np.empty((0, len(use_case.feature_names)))]
    )


def _unlabeled(frame: pd.DataFrame) -> pd.DataFrame:
    """Packs without a measured label: NaN label, no class and no source until the review queue gives one."""
    return frame.assign(
        label=np.nan,
        label_class=pd.Series([None] * len(frame), dtype=object),
        label_source=pd.Series([None] * len(frame), dtype=object),
    )


def _examples_frame(
    run: ContextInterval,
    window_start_ms: np.ndarray,
    window_end_ms: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    use_case: UseCaseConfig,
    *,
    spec_lower: np.ndarray,
    spec_upper: np.ndarray,
) -> pd.DataFrame:
    n = len(labels)
    meta = pd.DataFrame(
        {
            "line_id": pd.Series([run.line_id] * n, dtype=str),
            "run_id": pd.Series([run.interval_id] * n, dtype=str),
            "window_start": _utc_ns(window_start_ms),
            "window_end": _utc_ns(window_end_ms),
            "label": np.asarray(labels, dtype=np.float64),
            "label_class": pd.Series(classify_between(labels, spec_lower, spec_upper), dtype=str),
            "label_source": pd.Series([LabelSource.MEASURED.value] * n, dtype=str),
            "spec_lower": np.asarray(spec_lower, dtype=np.float64),
            "spec_upper": np.asarray(spec_upper, dtype=np.float64),
        }
    )
    feature_columns = pd.DataFrame(features, columns=use_case.feature_names, dtype=np.float64)
    return pd.concat([meta, feature_columns], axis=1)


def _empty_examples(use_case: UseCaseConfig) -> pd.DataFrame:
    """No examples, but every column with its dtype, so readers and Parquet see one schema."""
    placeholder = ContextInterval(
        kind=ContextKind.RUN, interval_id="none", line_id="none", start=EPOCH, end=EPOCH + timedelta(seconds=1)
    )
    no_ms, none = np.empty(0, dtype=np.int64), np.empty(0)
    features = np.empty((0, len(use_case.feature_names)))
    return _examples_frame(placeholder, no_ms, no_ms, none, features, use_case, spec_lower=none, spec_upper=none)


# --- helpers -------------------------------------------------------------------------------------


def _utc_ns(epoch_ms: np.ndarray) -> pd.Series:
    stamps = np.asarray(epoch_ms, dtype=np.int64).astype("datetime64[ms]").astype("datetime64[ns]")
    return pd.Series(pd.DatetimeIndex(stamps).tz_localize("UTC"))


def _whole_steps(name: str, seconds: float, period_ms: int) -> int:
    steps, remainder = divmod(round(seconds * 1000), period_ms)
    if remainder or steps < 1:
        raise ValueError(f"{name}={seconds}s is not a whole number of sample periods ({period_ms} ms)")
    return steps
