"""What `edgeloop monitor` and the demo report show, read from where the cloud keeps it (issue 17).

- Alerts: the landed AlertEvents (functions/predictions: alerts/line=<id>/event_date=<day>/*.jsonl),
  each raise paired with its clear by alert_id: when it was raised, its lead time, when it cleared.
- Live accuracy: functions/live_accuracy's window reports and state (monitoring/line=<id>/), per
  model version: the model's RMSE beside persistence's and the registration figure.
- Triggers: the retraining decision the retraining function would take now (cloud/retraining.py
  decide_retraining) on the line's retraining item (monitoring table), its tripped degraded streaks
  and the schedule; whether a pipeline execution runs is asked of SageMaker only when a start would fire.

Nothing here writes: it is the operator's read of the monitoring state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from edgeloop.cloud import s3
from edgeloop.cloud.aws import client
from edgeloop.cloud.pipeline_execution import executing_lines
from edgeloop.cloud.retraining import Decision, decide_asking_what_runs, degraded_trigger
from edgeloop.cloud.retraining_table import RetrainingTable
from edgeloop.functions.live_accuracy.store import monitored_lines, read_line_monitoring
from edgeloop.schemas import UseCaseConfig, names
from edgeloop.schemas.monitoring import LiveAccuracyReport, LiveAccuracyState, LiveAccuracyWindow
from edgeloop.schemas.prediction import AlertEvent, AlertEventKind

_LINE = re.compile(r"^line=([^/]+)/$")
_EVENT_DATE = re.compile(r"/event_date=(\d{4}-\d{2}-\d{2})/")


@dataclass(frozen=True)
class AlertEpisode:
    """One alert: its raise (None if only its clear landed in the days read) and its clear (None: open)."""

    alert_id: str
    line_id: str
    thing_name: str
    violation_class: str
    raised: AlertEvent | None
    cleared: AlertEvent | None

    @property
    def raised_at(self) -> datetime:
        """When the raising prediction was made (the clear's record of it when the raise is not read)."""
        return (self.raised or self.cleared).raised_at

    @property
    def lead_time_s(self) -> float | None:
        return self.raised.lead_time_s if self.raised else None

    @property
    def open(self) -> bool:
        return self.cleared is None


@dataclass
class LineMonitoring:
    line_id: str
    alerts: list[AlertEpisode] = field(default_factory=list)  # newest first
    state: LiveAccuracyState | None = None
    reports: list[LiveAccuracyReport] = field(default_factory=list)  # oldest first

    def latest_by_version(self) -> list[LiveAccuracyWindow]:
        """Each model version's newest window that joined predictions (newest report wins)."""
        latest: dict[tuple[str, str], LiveAccuracyWindow] = {}
        for report in self.reports:
            for window in report.models:
                if window.joined:
                    latest[(window.model_id, window.version)] = window
        return sorted(latest.values(), key=lambda w: (w.window_end, w.model_id, w.version), reverse=True)


@dataclass
class Monitoring:
    lines: list[LineMonitoring]
    decisions: list[Decision]
    executions_note: str | None = None  # why running executions were not (or could not be) asked

    def document(self, alerts: int) -> dict:
        """What `edgeloop monitor --json` prints: per line its newest `alerts` alerts (raise and clear),
        newest window per model version and live-accuracy state; the retraining decisions."""
        lines = []
        for line in self.lines:
            episodes = [
                {
                    "alert_id": e.alert_id,
                    "raise": e.raised.model_dump(mode="json") if e.raised else None,
                    "clear": e.cleared.model_dump(mode="json") if e.cleared else None,
                }
                for e in line.alerts[:alerts]
            ]
            lines.append(
                {
                    "line_id": line.line_id,
                    "alerts": episodes,
                    "live_accuracy": [w.model_dump(mode="json") for w in line.latest_by_version()],
                    "state": line.state.model_dump(mode="json") if line.state else None,
                }
            )
        decisions = [d.model_dump(mode="json") for d in self.decisions]
        return {"lines": lines, "decisions": decisions, "executions_note": self.executions_note}


def line_ids(bucket: str) -> list[str]:
    """Lines with landed alerts or live-accuracy records."""
    found = set(monitored_lines(bucket))
    pages = (
        client("s3")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix=f"{names.ALERTS_PREFIX}/", Delimiter="/")
    )
    for page in pages:
        for common in page.get("CommonPrefixes", []):
            match = _LINE.match(common["Prefix"].removeprefix(f"{names.ALERTS_PREFIX}/"))
            if match:
                found.add(match.group(1))
    return sorted(found)


def landed_alerts(bucket: str, line_id: str, since: date) -> list[AlertEvent]:
    """The line's landed AlertEvents of event days from `since` on, in landing order per object."""
    events = []
    for key in sorted(s3.list_keys(bucket, f"{names.ALERTS_PREFIX}/line={line_id}/")):
        day = _EVENT_DATE.search(key)
        if day is None or date.fromisoformat(day.group(1)) < since:
            continue
        for text in s3.get_bytes(bucket, key).decode().splitlines():
            if text.strip():
                events.append(AlertEvent.model_validate(json.loads(text)))
    return events


def alert_episodes(events: Iterable[AlertEvent]) -> list[AlertEpisode]:
    """Raises and clears paired by alert_id (a redelivered event counts once), newest raise first."""
    raises: dict[str, AlertEvent] = {}
    clears: dict[str, AlertEvent] = {}
    for event in events:
        kept = raises if event.event is AlertEventKind.RAISE else clears
        kept.setdefault(event.alert_id, event)
    episodes = []
    for alert_id in {*raises, *clears}:
        first = raises.get(alert_id) or clears[alert_id]
        episodes.append(
            AlertEpisode(
                alert_id=alert_id,
                line_id=first.line_id,
                thing_name=first.thing_name,
                violation_class=first.violation_class.value,
                raised=raises.get(alert_id),
                cleared=clears.get(alert_id),
            )
        )
    return sorted(episodes, key=lambda e: (e.raised_at, e.alert_id), reverse=True)


def degraded_triggers(states: Sequence[LiveAccuracyState], now: datetime) -> list:
    """A trigger per tripped degraded streak, as the degraded event would carry it."""
    triggers = []
    for state in states:
        for streak in state.streaks:
            if streak.tripped and streak.windows:
                detail = {
                    "line_id": state.line_id,
                    "model_id": streak.model_id,
                    "version": streak.version,
                    "reason": f"{len(streak.windows)} degraded live-accuracy windows in a row",
                    "windows": [w.isoformat() for w in streak.windows],
                }
                triggers.append(degraded_trigger(detail, now))
    return triggers


def read_monitoring(
    bucket: str,
    use_case: UseCaseConfig,
    *,
    now: datetime,
    lines: Sequence[str] | None = None,
    alert_days: int = 7,
    windows: int = 24,
    monitoring_table: str = names.LOCAL_MONITORING_TABLE,
) -> Monitoring:
    """Every shown line's alerts (event days in the last `alert_days`), live accuracy (`windows` newest
    reports) and the retraining decisions now."""
    since = (now - timedelta(days=alert_days)).date()
    shown = list(lines) if lines else line_ids(bucket)
    result = []
    for line_id in shown:
        state, reports = read_line_monitoring(bucket, line_id, last=windows)
        episodes = alert_episodes(landed_alerts(bucket, line_id, since))
        result.append(LineMonitoring(line_id, alerts=episodes, state=state, reports=reports))
    decisions, note = retraining_decisions(result, use_case, now, monitoring_table)
    return Monitoring(lines=result, decisions=decisions, executions_note=note)


def retraining_decisions(
    lines: Sequence[LineMonitoring], use_case: UseCaseConfig, now: datetime, monitoring_table: str
) -> tuple[list[Decision], str | None]:
    """decide_retraining on the lines' items and tripped streaks; SageMaker's running executions are
    asked only if a start would fire (as the retraining function does)."""
    line_ids_ = [line.line_id for line in lines]
    states = RetrainingTable(monitoring_table).states(line_ids_)
    degraded = degraded_triggers([line.state for line in lines if line.state is not None], now)
    pipeline = names.pipeline_name(use_case.use_case)
    decisions, error = decide_asking_what_runs(
        lambda: executing_lines(client("sagemaker"), pipeline, now),
        config=use_case.monitoring,
        now=now,
        lines=line_ids_,
        states=states,
        degraded=degraded,
        pipeline_name=pipeline,
    )
    if error is not None:
        return decisions, f"running executions of {pipeline} not known ({error}): a start shown may be held back"
    return decisions, None
