"""Live accuracy rounds: per line, every window of predicted time whose measurements have landed, scored once.

A window [start, start + window_minutes) of predicted_for (windows aligned on the epoch) is due once its
last label window has ended and the measurements of it have reached curated/: at window end +
label_window_s + the landing delay (the stack's compaction interval). A round scores, per line, the due
windows after the state's `scored_through` (a line seen for the first time: from its first made_date,
at most MAX_CATCHUP back), writes one LiveAccuracyReport per window, updates the degraded streak of each
model version (a judged degraded window extends it, a judged healthy one ends it, a window with too few
joined predictions leaves it), and when a streak reaches `degraded_windows` sends one
MODEL_DEGRADED_DETAIL_TYPE event for it. The state is written last, conditionally: a window is scored once,
and a re-run of a round that did not finish rewrites the same reports and re-sends the same event
(at least once; the retraining function's request token makes a repeat start nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from edgeloop.cloud.datalake.context import get_context_intervals
from edgeloop.model_runtime.alignment import MAX_GAP_PERIODS
from edgeloop.schemas import names
from edgeloop.schemas.context import ContextKind
from edgeloop.schemas.monitoring import (
    DegradedStreak,
    LiveAccuracyReport,
    LiveAccuracyState,
    LiveAccuracyWindow,
    ModelDegradedDetail,
    model_version_key,
)
from edgeloop.schemas.use_case import UseCaseConfig

from . import registry, store
from .join import Measured, score_version
from .store import Skipped

logger = logging.getLogger(__name__)
MAX_CATCHUP = timedelta(days=3)  # a line first seen, or a function off for long, starts at most this far back
PUT_EVENTS_MAX_ENTRIES = 10  # PutEvents takes at most 10 entries per call
DAY_MS = 86_400_000
# an EventBridge client, or anything with its put_events(Entries=[...]) -> {"FailedEntryCount", "Entries"}
EventBridge = Any
RegisteredRmse = Callable[[str, str, str], "float | None"]  # (line_id, model_id, version)


@dataclass
class RoundResult:
    reports: list[LiveAccuracyReport] = field(default_factory=list)
    trips: list[ModelDegradedDetail] = field(default_factory=list)
    skipped: Skipped = field(default_factory=Skipped)
    state_conflicts: list[str] = field(default_factory=list)  # lines another round advanced first
    failed_lines: dict[str, str] = field(default_factory=dict)  # line -> error (its state is not advanced)

    @property
    def degraded_lines(self) -> list[str]:
        return sorted({trip.line_id for trip in self.trips})


def due_windows(start: datetime, now: datetime, use_case: UseCaseConfig, landing_delay_s: float) -> list[datetime]:
    """Window starts from `start` (aligned down) whose windows are due at `now`."""
    width = timedelta(minutes=use_case.monitoring.window_minutes)
    epoch = datetime(1970, 1, 1, tzinfo=start.tzinfo)
    first = epoch + ((start - epoch) // width) * width
    last_end = now - timedelta(seconds=use_case.label_window_s + landing_delay_s)
    windows = []
    while first + width <= last_end:
        windows.append(first)
        first += width
    return windows


class LineReader:
    """A line's predictions and target samples by day, read once per round and dropped once behind."""

    def __init__(self, bucket: str, line_id: str, use_case: UseCaseConfig, skipped: Skipped) -> None:
        self.bucket, self.line_id, self.use_case, self.skipped = bucket, line_id, use_case, skipped
        self._predictions: dict[str, pd.DataFrame] = {}
        self._target: dict[str, pd.DataFrame] = {}
        runs = [i for i in self._intervals() if i.kind is ContextKind.RUN]
        self.run_starts = np.array([int(i.start.timestamp() * 1000) for i in runs], dtype=np.int64)
        self.run_ends = np.array([int(i.end.timestamp() * 1000) for i in runs], dtype=np.int64)

    def _intervals(self) -> list:
        try:
            return sorted(get_context_intervals(self.bucket, self.line_id), key=lambda i: i.start)
        except ValueError as exc:  # a damaged context file: label windows end with the measured data
            logger.warning("context of line %s unreadable, runs unknown: %s", self.line_id, exc)
            return []

    @staticmethod
    def _days(start_ms: int, end_ms: int) -> list[str]:
        days = range(start_ms // DAY_MS, (end_ms - 1) // DAY_MS + 1)
        return [pd.Timestamp(day * DAY_MS, unit="ms").strftime("%Y-%m-%d") for day in days]

    def _cached(self, cache: dict, days: list[str], read: Callable[[str], pd.DataFrame]) -> pd.DataFrame:
        for day in [d for d in cache if d < days[0]]:
            del cache[day]  # windows go forward in time: bounded memory
        frames = [cache[d] if d in cache else cache.setdefault(d, read(d)) for d in days]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def window(self, start: datetime, end: datetime) -> tuple[pd.DataFrame, Measured]:
        """The predictions for [start, end) of predicted time, and the target samples they need."""
        start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        uc = self.use_case
        made_from, made_to = start_ms - uc.horizon_s * 1000, end_ms - uc.horizon_s * 1000
        read_p = partial(store.read_predictions, self.bucket, self.line_id, skipped=self.skipped)
        predictions = self._cached(self._predictions, self._days(made_from, made_to), read_p)
        in_window = (predictions["predicted_for_ms"] >= start_ms) & (predictions["predicted_for_ms"] < end_ms)
        # value now reaches a pack (and its max gap) back; labels a label window past the predicted time
        lookback_ms = int((uc.pack_window_s + (MAX_GAP_PERIODS + 1) * uc.sample_period_s) * 1000)
        target_days = self._days(made_from - lookback_ms, end_ms + uc.label_window_s * 1000)
        read_t = partial(store.read_target, self.bucket, self.line_id, metric=uc.target_metric)
        target = self._cached(self._target, target_days, lambda d: read_t(event_date=d))
        measured = Measured(
            time_ms=target["time_ms"].to_numpy(dtype=np.int64),
            values=target["value"].to_numpy(dtype=np.float64),
            run_starts_ms=self.run_starts,
            run_ends_ms=self.run_ends,
        )
        return predictions[in_window], measured


def update_streaks(
    streaks: dict[str, DegradedStreak], windows: list[LiveAccuracyWindow], degraded_windows: int
) -> list[ModelDegradedDetail]:
    """Advance each version's streak by one window's judged figures; the trips this window causes."""
    trips = []
    for window in windows:
        if not window.judged:
            continue  # too few joined predictions: neither extends nor ends a streak
        key = model_version_key(window.model_id, window.version)
        streak = streaks.get(key) or DegradedStreak(model_id=window.model_id, version=window.version)
        if not window.degraded:
            streaks[key] = streak.model_copy(update={"windows": [], "tripped": False})
            continue
        streak = streak.model_copy(update={"windows": [*streak.windows, window.window_start][-degraded_windows:]})
        if len(streak.windows) >= degraded_windows and not streak.tripped:
            streak = streak.model_copy(update={"tripped": True})
            trips.append(
                ModelDegradedDetail(
                    line_id=window.line_id,
                    model_id=window.model_id,
                    version=window.version,
                    reason=f"{degraded_windows} degraded windows in a row; last: {'; '.join(window.reasons)}",
                    windows=streak.windows,
                )
            )
        streaks[key] = streak
    return trips


def send_trips(trips: list[ModelDegradedDetail], eventbridge: EventBridge, bus: str) -> None:
    """One MODEL_DEGRADED_DETAIL_TYPE entry per trip; a refused entry raises (the round is re-run)."""
    entries = [
        {
            "Source": names.EVENT_SOURCE,
            "DetailType": names.MODEL_DEGRADED_DETAIL_TYPE,
            "Detail": trip.model_dump_json(),
            "EventBusName": bus,
        }
        for trip in trips
    ]
    for start in range(0, len(entries), PUT_EVENTS_MAX_ENTRIES):
        chunk = entries[start : start + PUT_EVENTS_MAX_ENTRIES]
        response = eventbridge.put_events(Entries=chunk)
        if response.get("FailedEntryCount"):
            failed = [
                f"{entry['Detail']}: {result.get('ErrorCode')} {result.get('ErrorMessage')}"
                for entry, result in zip(chunk, response.get("Entries", []), strict=False)
                if result.get("ErrorCode")
            ]
            raise RuntimeError(f"PutEvents refused {response['FailedEntryCount']} of {len(chunk)} entries: {failed}")


@dataclass
class Round:
    """What every line of a round shares."""

    bucket: str
    use_case: UseCaseConfig
    now: datetime
    landing_delay_s: float
    registered_rmse: RegisteredRmse
    result: RoundResult


def _first_start(bucket: str, line_id: str, now: datetime) -> datetime | None:
    days = store.made_dates(bucket, line_id)
    if not days:
        return None
    first = pd.Timestamp(days[0], tz="UTC").to_pydatetime()
    return max(first, now - MAX_CATCHUP)


def _registered(state: LiveAccuracyState, rows: pd.DataFrame, line_id: str, lookup: RegisteredRmse) -> dict:
    known = dict(state.registered_rmse)
    for model_id, version in rows[["model_id", "version"]].drop_duplicates().itertuples(index=False):
        key = model_version_key(model_id, version)
        if key not in known:
            known[key] = lookup(line_id, model_id, version)
    return known


def score_window(reader: LineReader, start: datetime, end: datetime, state: LiveAccuracyState, lookup) -> tuple:
    """The window's report and the state's registered figures (looked up once per version)."""
    predictions, measured = reader.window(start, end)
    registered = _registered(state, predictions, reader.line_id, lookup)
    windows = [
        score_version(
            rows,
            measured,
            reader.use_case,
            registered_rmse=registered[model_version_key(model_id, version)],
            line_id=reader.line_id,
            model_id=model_id,
            version=version,
            window_start=start,
            window_end=end,
        )
        for (model_id, version), rows in predictions.groupby(["model_id", "version"], sort=True)
    ]
    report = LiveAccuracyReport(line_id=reader.line_id, window_start=start, window_end=end, models=windows)
    return report, registered


def score_line(round_: Round, line_id: str, eventbridge: EventBridge, bus: str) -> None:
    """Score the line's due windows, write their reports, send its trips, then advance its state."""
    bucket, use_case = round_.bucket, round_.use_case
    state, etag = store.load_state(bucket, line_id)
    start = state.scored_through if state is not None else _first_start(bucket, line_id, round_.now)
    if start is None:
        return
    windows = due_windows(max(start, round_.now - MAX_CATCHUP), round_.now, use_case, round_.landing_delay_s)
    if state is not None:  # aligned down, the first window may end inside the scored ones
        windows = [w for w in windows if w >= state.scored_through]
    if not windows:
        return
    state = state or LiveAccuracyState(line_id=line_id, scored_through=windows[0])
    reader = LineReader(bucket, line_id, use_case, round_.result.skipped)
    width = timedelta(minutes=use_case.monitoring.window_minutes)
    streaks = {model_version_key(s.model_id, s.version): s for s in state.streaks}
    reports, trips = [], []
    for window_start in windows:
        report, registered = score_window(reader, window_start, window_start + width, state, round_.registered_rmse)
        state = state.model_copy(update={"registered_rmse": registered})
        trips.extend(update_streaks(streaks, report.models, use_case.monitoring.degraded_windows))
        if report.models:  # a window without predictions (the line stood still) leaves no report
            reports.append(report)
    for report in reports:
        store.put_report(bucket, report)
    send_trips(trips, eventbridge, bus)
    state = state.model_copy(
        update={
            "scored_through": windows[-1] + width,
            "windows_scored": state.windows_scored + len(windows),
            "streaks": [streaks[key] for key in sorted(streaks)],
        }
    )
    if not store.save_state(bucket, state, etag):
        round_.result.state_conflicts.append(line_id)
        logger.warning("line %s: another round advanced its state first; this round's state is dropped", line_id)
    round_.result.reports.extend(reports)
    round_.result.trips.extend(trips)


def run_round(
    bucket: str,
    use_case: UseCaseConfig,
    now: datetime,
    *,
    landing_delay_s: float,
    eventbridge: EventBridge,
    bus: str = "default",
    registered_rmse: RegisteredRmse | None = None,
    line_ids: list[str] | None = None,
) -> RoundResult:
    """One scheduled round over `line_ids` (default: every line with landed predictions)."""
    if registered_rmse is None:
        registered_rmse = partial(registry.registered_rmse, use_case.use_case)
    round_ = Round(bucket, use_case, now, landing_delay_s, registered_rmse, RoundResult())
    for line_id in line_ids if line_ids is not None else store.predicted_lines(bucket):
        try:
            score_line(round_, line_id, eventbridge, bus)
        except Exception as exc:  # noqa: BLE001 (one line's failure must not keep the others unscored)
            logger.exception("line %s: live accuracy round failed", line_id)
            round_.result.failed_lines[line_id] = f"{type(exc).__name__}: {exc}"
    return round_.result
