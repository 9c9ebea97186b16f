"""Violation alerts from classified predictions: debounced raise, hysteresis clear, kept across restarts.

- Raise: `raise_after` predictions in a row in the same violation class (LSL or USL) raise an alert
  of that class. One prediction over a limit is often noise at a 300 s horizon; a few in a row
  (30 s apart) are not.
- Clear: an open alert clears after `clear_after` predictions in a row in range. A prediction in the
  alert's class starts that count again; `raise_after` in a row in the other violation class clear
  it and raise one of that class.
- A prediction without known spec limits (no class) or a window not scored changes nothing: no
  evidence either way.
- The raise's lead time: the earliest violation its streak predicted (the first prediction's
  made_at + horizon) minus the time the raise is sent, both on the gateway's clock.

The state (open alert, streaks) is persisted after every change (JSON, written atomically), so a
restart neither raises an open alert twice nor forgets to clear it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from edgeloop.schemas import names
from edgeloop.schemas.prediction import VIOLATION_CLASSES, AlertEvent, AlertEventKind, PredictionMessage
from edgeloop.schemas.training import ViolationClass

from .agent import write_atomic

log = logging.getLogger(__name__)


@dataclass
class AlertState:
    """What the alerter remembers between predictions (and restarts)."""

    open_alert_id: str | None = None
    open_class: str | None = None
    raised_at: str | None = None  # ISO time, made_at of the raising prediction
    streak_class: str | None = None  # the violation class of the current streak
    streak: int = 0
    streak_first_for: str | None = None  # ISO time: predicted_for of the streak's first prediction
    in_range: int = 0  # in-range predictions in a row while an alert is open


class ViolationAlerter:
    def __init__(
        self,
        *,
        raise_after: int = names.DEFAULT_ALERT_RAISE_AFTER,
        clear_after: int = names.DEFAULT_ALERT_CLEAR_AFTER,
        path: Path | None = None,
    ) -> None:
        for name, value in (("raise_after", raise_after), ("clear_after", clear_after)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a whole number >= 1")
        self.raise_after = raise_after
        self.clear_after = clear_after
        self.path = path
        self.state = self._load(path) if path is not None and path.exists() else AlertState()

    @staticmethod
    def _load(path: Path) -> AlertState:
        try:
            return AlertState(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:  # torn or foreign file: start closed, say so
            log.warning("alert state %s not read (%s): starting with no open alert", path, exc)
            return AlertState()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(asdict(self.state)).encode())

    @property
    def open_class(self) -> ViolationClass | None:
        return ViolationClass(self.state.open_class) if self.state.open_class else None

    def observe(self, prediction: PredictionMessage) -> list[AlertEvent]:
        """The alert events this prediction decides (none, a raise, a clear, or a clear then a raise)."""
        decided = prediction.violation_class
        if decided is None:
            return []
        before = asdict(self.state)
        events = self._violation(prediction) if decided in VIOLATION_CLASSES else self._in_range(prediction)
        if asdict(self.state) != before:
            self._save()
        return events

    def _violation(self, prediction: PredictionMessage) -> list[AlertEvent]:
        state = self.state
        decided = prediction.violation_class.value
        state.in_range = 0
        if decided == state.open_class:
            state.streak_class, state.streak, state.streak_first_for = None, 0, None
            return []
        if decided != state.streak_class:
            state.streak_class, state.streak = decided, 0
            state.streak_first_for = prediction.predicted_for.isoformat()
        state.streak += 1
        if state.streak < self.raise_after:
            return []
        events = [self._clear(prediction, state.streak)] if state.open_class else []
        events.append(self._raise(prediction))
        return events

    def _in_range(self, prediction: PredictionMessage) -> list[AlertEvent]:
        state = self.state
        state.streak_class, state.streak, state.streak_first_for = None, 0, None
        if state.open_class is None:
            return []
        state.in_range += 1
        if state.in_range < self.clear_after:
            return []
        event = self._clear(prediction, state.in_range)
        state.in_range = 0
        return [event]

    def _raise(self, prediction: PredictionMessage) -> AlertEvent:
        state = self.state
        predicted_for = datetime.fromisoformat(state.streak_first_for or prediction.predicted_for.isoformat())
        made_ms = int(prediction.made_at.timestamp() * 1000)
        alert_id = f"{prediction.thing_name}-{state.streak_class}-{made_ms}"
        event = AlertEvent(
            thing_name=prediction.thing_name,
            line_id=prediction.line_id,
            alert_id=alert_id,
            event=AlertEventKind.RAISE,
            violation_class=ViolationClass(state.streak_class),
            raised_at=prediction.made_at,
            at=prediction.made_at,
            predicted_for=predicted_for,
            lead_time_s=(predicted_for - prediction.sent_at).total_seconds(),
            consecutive=state.streak,
            predicted_level=prediction.predicted_level,
            spec=prediction.spec,
            model=prediction.model,
            sent_at=prediction.sent_at,
        )
        state.open_alert_id, state.open_class = alert_id, state.streak_class
        state.raised_at = prediction.made_at.isoformat()
        state.streak_class, state.streak, state.streak_first_for, state.in_range = None, 0, None, 0
        return event

    def _clear(self, prediction: PredictionMessage, consecutive: int) -> AlertEvent:
        state = self.state
        event = AlertEvent(
            thing_name=prediction.thing_name,
            line_id=prediction.line_id,
            alert_id=state.open_alert_id,
            event=AlertEventKind.CLEAR,
            violation_class=ViolationClass(state.open_class),
            raised_at=datetime.fromisoformat(state.raised_at),
            at=prediction.made_at,
            predicted_for=prediction.predicted_for,
            consecutive=consecutive,
            predicted_level=prediction.predicted_level,
            spec=prediction.spec,
            model=prediction.model,
            sent_at=prediction.sent_at,
        )
        state.open_alert_id = state.open_class = state.raised_at = None
        return event
