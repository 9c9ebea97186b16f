"""Context intervals from the gateway's own live signals: the use case's `live_context` rules.

Runs: a new run starts when the run metric's value changes (interval id from the value and the start,
so the same run is the same interval after a restart). Limits: fixed, setpoint ± band, or two limit
metrics; a new LIMITS interval each time the limits (or the run) change, as a replay mapping's
context block does for a recording (device_shims/context_limits.py).

A change counts only once the new value has held for `hold_samples` samples and `hold_s` seconds
(hysteresis: a setpoint flickering for a sample does not cut the run or the limits); the new interval
then starts at the first sample of the new value, and the one before ends there.

The current interval is open: it ends `lease_s` after the newest sample and is sent again (extended)
when less than half of that is left, so the cloud's context intake gets a message every lease_s/2,
not one per sample. Every interval produced goes to the ContextStore like an adapter's (the store
persists it), and ContextRules picks up the current one from the store after a restart.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from edgeloop.schemas.bounded_json import MAX_CONTEXT_INTERVALS
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.context import ContextInterval, ContextKind, SpecLimits
from edgeloop.schemas.live_context import LiveContextConfig, LiveLimits

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LIVE_MARK = "live"  # in the interval ids this module makes: <kind>-<line>-live-...
Sample = tuple[str, int, float]
Key = tuple[float, ...]


def live_interval_id(kind: ContextKind, line_id: str, start_ms: int, value: str = "") -> str:
    """<kind>-<line>-live[-<value>]-<start, UTC ms>: deterministic, so a restart continues the same interval."""
    moment = EPOCH + timedelta(milliseconds=start_ms)
    stamp = f"{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z"
    return "-".join(part for part in (kind.value, line_id, LIVE_MARK, value, stamp) if part)


def value_text(value: float) -> str:
    """A run metric's value as the run's name: 7.0 -> "7", 1234567.0 -> "1234567" (no exponent)."""
    return format(value, ".15g")


@dataclass
class _Open:
    key: Key
    start_ms: int
    end_ms: int  # as last sent
    interval_id: str


class _Tracker:
    """One kind's current value with hold-off: what changed, from when, and the open interval."""

    def __init__(self, kind: ContextKind, same: Callable[[Key, Key], bool], hold_samples: int, hold_ms: int) -> None:
        self.kind = kind
        self.same = same
        self.hold_samples = hold_samples
        self.hold_ms = hold_ms
        self.open: _Open | None = None
        self.restored: _Open | None = None  # the store's latest interval of this kind, until the first value
        self._pending: tuple[Key, int, int] | None = None  # (key, first_ms, samples)

    def observe(self, t_ms: int, key: Key) -> tuple[int, Key] | None:
        """(start in ms, value) of a change confirmed by this sample, else None."""
        if self.open is not None and self.same(key, self.open.key):
            self._pending = None
            return None
        if self._pending is not None and self.same(key, self._pending[0]):
            pending_key, first, count = self._pending[0], self._pending[1], self._pending[2] + 1
        else:
            pending_key, first, count = key, t_ms, 1
        if count >= self.hold_samples and t_ms - first >= self.hold_ms:
            self._pending = None
            return first, pending_key
        self._pending = (pending_key, first, count)
        return None


class ContextRules:
    """Applies a use case's live_context to live samples; `take()` returns the intervals made or extended."""

    MAX_UNSENT = MAX_CONTEXT_INTERVALS  # intervals a host may leave unsent (the newest are kept): one message

    def __init__(
        self,
        config: LiveContextConfig,
        line_id: str,
        target_metric: str,
        stored: Iterable[ContextInterval] = (),
    ) -> None:
        self.config = config
        self.line_id = line_id
        self.target_metric = target_metric
        self.lease_ms = int(config.lease_s * 1000)
        hold_ms = int(config.hold_s * 1000)
        tolerance = config.limits.tolerance if config.limits is not None else 0.0
        self.runs = _Tracker(ContextKind.RUN, lambda a, b: a == b, config.hold_samples, hold_ms)
        self.limits = _Tracker(
            ContextKind.LIMITS,
            lambda a, b: max(abs(x - y) for x, y in zip(a, b)) <= tolerance,
            config.hold_samples,
            hold_ms,
        )
        self._latest: dict[str, float] = {}
        self._newest_ms: int | None = None
        self._newest_per_metric: dict[str, int] = {}
        self._made: dict[tuple[str, str], ContextInterval] = {}
        self._lock = threading.Lock()
        self.refused_limits = 0  # samples whose limits were not an interval (lower >= upper, no tolerance)
        self._restore(stored)

    # --- restart ----------------------------------------------------------------------------------
    def _restore(self, stored: Iterable[ContextInterval]) -> None:
        stored = list(stored)
        prefixes = {kind: f"{kind.value}-{self.line_id}-{LIVE_MARK}-" for kind in (ContextKind.RUN, ContextKind.LIMITS)}
        for tracker in (self.runs, self.limits):
            mine = [i for i in stored if i.kind is tracker.kind and i.interval_id.startswith(prefixes[tracker.kind])]
            if mine:
                latest = max(mine, key=lambda i: i.start)
                key = self._key_of(latest)
                if key is not None:
                    tracker.restored = _Open(key, _ms(latest.start), _ms(latest.end), latest.interval_id)

    def _key_of(self, interval: ContextInterval) -> Key | None:
        if interval.kind is ContextKind.LIMITS:
            return (interval.spec.lower, interval.spec.upper) if interval.spec is not None else None
        try:
            return (float(interval.value),)
        except ValueError:
            return None

    # --- samples ----------------------------------------------------------------------------------
    def observe(self, samples: Sequence[Sample]) -> None:
        """Take live samples (any metrics; those the rules read are used), in time order; a sample
        older than its metric's newest is ignored (metrics may arrive in separate messages, each in order)."""
        fixed = self.config.limits is not None and self.config.limits.fixed is not None
        used = self.config.used_metrics()
        # fixed limits read no metric: any sample says the line is live and carries them on
        mine = sorted((s for s in samples if fixed or s[0] in used), key=lambda s: s[1])
        with self._lock:
            for metric, t_ms, value in mine:
                if t_ms < self._newest_per_metric.get(metric, t_ms):
                    continue
                self._newest_per_metric[metric] = t_ms
                self._newest_ms = max(t_ms, self._newest_ms or t_ms)
                self._latest[metric] = value
                self._step(metric, t_ms)
            if self._newest_ms is not None:
                self._extend(self._newest_ms)

    def _step(self, metric: str, t_ms: int) -> None:
        """A sample of `metric` at t_ms: the tracker(s) reading it see their value now."""
        runs = self.config.runs
        if runs is not None and metric == runs.metric:
            change = self.runs.observe(t_ms, (self._latest[runs.metric],))
            if change is not None and self._change(self.runs, change, t_ms):
                self._split_limits(change[0], t_ms)
        limits = self.config.limits
        reads = limits is not None and (limits.fixed is not None or metric in limits.used_metrics())
        key = self._limits_key(limits) if reads and limits is not None else None
        if key is not None:
            change = self.limits.observe(t_ms, key)
            if change is not None:
                self._change(self.limits, change, t_ms)

    def _limits_key(self, limits: LiveLimits) -> Key | None:
        if limits.fixed is not None:
            return limits.fixed
        if limits.setpoint is not None:
            centre = self._latest.get(limits.setpoint)
            if centre is None:
                return None
            half = limits.band if limits.band is not None else abs(centre) * (limits.relative_band or 0.0)
            key = (centre - half, centre + half)
        else:
            assert limits.metrics is not None
            lower, upper = self._latest.get(limits.metrics.lower), self._latest.get(limits.metrics.upper)
            if lower is None or upper is None:
                return None
            key = (lower, upper)
        if not key[0] < key[1]:
            self.refused_limits += 1
            return None
        return key

    def _change(self, tracker: _Tracker, change: tuple[int, Key], t_ms: int) -> bool:
        """Close the open interval where the new value began and open one for it from there; False when the
        value is the one a restored interval had, which then goes on."""
        start_ms, key = change
        previous = tracker.open or tracker.restored
        tracker.restored = None
        if previous is not None and self._continues(tracker, previous, key, start_ms):
            tracker.open = previous
            return False
        if previous is not None and previous.end_ms > start_ms > previous.start_ms:
            self._emit(tracker.kind, previous.key, previous.start_ms, start_ms, previous.interval_id)
        tracker.open = self._new_open(tracker.kind, key, start_ms, t_ms)
        return True

    def _continues(self, tracker: _Tracker, previous: _Open, key: Key, start_ms: int) -> bool:
        """A restored interval of the same value that was still open (within a lease) goes on."""
        return (
            tracker.open is None
            and tracker.same(key, previous.key)
            and previous.start_ms <= start_ms <= previous.end_ms + self.lease_ms
        )

    def _split_limits(self, start_ms: int, t_ms: int) -> None:
        """A new run cuts the limits too: one limits interval never spans two runs."""
        current = self.limits.open
        if current is None or current.start_ms >= start_ms:
            return
        self._emit(ContextKind.LIMITS, current.key, current.start_ms, start_ms, current.interval_id)
        self.limits.open = self._new_open(ContextKind.LIMITS, current.key, start_ms, t_ms)

    def _new_open(self, kind: ContextKind, key: Key, start_ms: int, t_ms: int) -> _Open:
        value = value_text(key[0]) if kind is ContextKind.RUN else ""
        opened = _Open(key, start_ms, t_ms + self.lease_ms, live_interval_id(kind, self.line_id, start_ms, value))
        self._emit(kind, key, start_ms, opened.end_ms, opened.interval_id)
        return opened

    def _extend(self, t_ms: int) -> None:
        for tracker in (self.runs, self.limits):
            current = tracker.open
            if current is not None and current.end_ms - t_ms < self.lease_ms // 2:
                current.end_ms = t_ms + self.lease_ms
                self._emit(tracker.kind, current.key, current.start_ms, current.end_ms, current.interval_id)

    def _emit(self, kind: ContextKind, key: Key, start_ms: int, end_ms: int, interval_id: str) -> None:
        if kind is ContextKind.RUN:
            value, spec = value_text(key[0]), None
        else:
            value = self._limits_text(key)
            spec = SpecLimits(target_metric=self.target_metric, lower=key[0], upper=key[1])
        interval = ContextInterval(
            kind=kind,
            interval_id=interval_id,
            line_id=self.line_id,
            start=EPOCH + timedelta(milliseconds=start_ms),
            end=EPOCH + timedelta(milliseconds=end_ms),
            value=value,
            spec=spec,
        )
        self._made[(kind.value, interval_id)] = interval  # a later version of the same interval replaces it

    def _limits_text(self, key: Key) -> str:
        limits = self.config.limits
        assert limits is not None
        if limits.setpoint is None:
            return f"[{key[0]:g}, {key[1]:g}]"
        centre = (key[0] + key[1]) / 2
        band = f"{limits.band:g}" if limits.band is not None else f"{limits.relative_band * 100:g} %"  # type: ignore[operator]
        return f"setpoint {centre:g} ± {band}"

    def take(self) -> list[ContextInterval]:
        """The intervals made, closed or extended since the last take, in the order first made."""
        with self._lock:
            made, self._made = list(self._made.values()), {}
        return made


def _ms(moment: datetime) -> int:
    return int(round((moment - EPOCH).total_seconds() * 1000))


def context_payload(intervals: Sequence[ContextInterval]) -> bytes:
    """A message for the cloud's context intake (names.context_topic): a JSON list of intervals."""
    return json.dumps([interval.model_dump(mode="json") for interval in intervals]).encode()
