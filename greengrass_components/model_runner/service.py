"""The model runner's wiring, shared by every host: the Greengrass component and the simulated gateway.

A ModelService owns the live scorer, the update agent and an outbox of status reports. The host
brings the transport: it feeds samples in, takes predictions out, hands over model updates and
says how a status report is sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar

from edgeloop.schemas import ModelStatusReport, ModelUpdate, PeriodicStatus, UseCaseConfig, names
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.context import ContextInterval
from edgeloop.schemas.model import Architecture
from edgeloop.schemas.prediction import AlertEvent, ModelIdentity, PredictionMessage

from .agent import ActiveModel, UpdateAgent, s3_download
from .alerts import ViolationAlerter
from .context_rules import ContextRules
from .context_store import ContextStore
from .runner import LivePrediction, LiveScorer

log = logging.getLogger(__name__)

Sample = tuple[str, int, float]
T = TypeVar("T")
REPORT_RETRY_S = 5.0  # between attempts to send a status report that failed
CONTEXT_FILE = "context.json"  # in state_dir: the line's run, limits and state intervals
ALERTS_FILE = "alerts.json"  # in state_dir: the open alert and the streaks


@dataclass(frozen=True)
class Scored:
    """What one scoring round produced: the legacy prediction sample(s), the PredictionMessage (None:
    nothing scored, or no line to name) and the alert events it decided."""

    samples: list[Sample]
    prediction: PredictionMessage | None = None
    alerts: list[AlertEvent] = field(default_factory=list)


class Outbox(Generic[T]):
    """Messages in the order they were decided; one that cannot be sent now waits for the next flush.

    `send` raises on failure. Nothing is dropped unless max_pending is set and passed (then the oldest
    go first, counted in `dropped`); the order is kept so an APPLIED never overtakes the ROLLED_BACK
    that follows it, nor an alert's clear its raise.
    """

    def __init__(
        self,
        send: Callable[[T], None],
        *,
        retry_after_s: float = REPORT_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
        describe: Callable[[T], str] = repr,
        max_pending: int | None = None,
    ) -> None:
        self._send = send
        self._items: list[T] = []
        self._lock = threading.Lock()
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._describe = describe
        self.max_pending = max_pending
        self.dropped = 0
        self._failed_at: float | None = None

    def put(self, item: T) -> None:
        with self._lock:
            self._items.append(item)
            if self.max_pending is not None and len(self._items) > self.max_pending:
                excess = len(self._items) - self.max_pending
                del self._items[:excess]
                self.dropped += excess
                log.warning("outbox full (%d waiting): dropped the %d oldest", self.max_pending, excess)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._items)

    def flush(self) -> int:
        """Send what is queued, oldest first, until one fails; returns how many were sent."""
        sent = 0
        with self._lock:
            while self._items:
                item = self._items[0]
                try:
                    self._send(item)
                except Exception as exc:  # any transport's failure: keep it for the next flush
                    self._failed_at = self._clock()
                    log.warning(
                        "%s not sent yet: %s: %s",
                        self._describe(item),
                        type(exc).__name__,
                        getattr(exc, "message", None) or exc,
                    )
                    break
                self._items.pop(0)
                self._failed_at = None
                sent += 1
        return sent

    def retry(self) -> int:
        """flush(), unless the last attempt failed less than retry_after_s ago (or nothing waits)."""
        with self._lock:
            if not self._items:
                return 0
            if self._failed_at is not None and self._clock() - self._failed_at < self.retry_after_s:
                return 0
        return self.flush()


def _describe_report(report: ModelStatusReport) -> str:
    return f"status report {report.model_id} {report.version} {report.status.value}"


class ReportOutbox(Outbox[ModelStatusReport]):
    """Status reports: a lost one would leave the cloud guessing about the device, so none is dropped."""

    def __init__(
        self,
        send: Callable[[ModelStatusReport], None],
        *,
        retry_after_s: float = REPORT_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(send, retry_after_s=retry_after_s, clock=clock, describe=_describe_report)


class ModelService:
    """Live scorer + update agent + report outbox, wired the one way every host uses them."""

    def __init__(
        self,
        thing_name: str,
        use_case: UseCaseConfig,
        send_report: Callable[[ModelStatusReport], None],
        *,
        state_dir: Path | None,
        download: Callable[[str], bytes] = s3_download,
        report_retry_s: float = REPORT_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
        public_key: str | None = None,
        architecture: Architecture | str | None = None,
        runtime_version: str | None = None,
        line_id: str | None = None,
        alert_raise_after: int = names.DEFAULT_ALERT_RAISE_AFTER,
        alert_clear_after: int = names.DEFAULT_ALERT_CLEAR_AFTER,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """public_key, architecture, runtime_version, line_id: what the update agent checks updates against
        (see UpdateAgent). line_id also names the line of the predictions and alerts (None: samples only).
        alert_raise_after / alert_clear_after: see alerts.ViolationAlerter. wall_clock: sent_at of messages."""
        self.use_case = use_case
        self.line_id = line_id
        self.live = LiveScorer(use_case)
        self.context = ContextStore(
            line_id or "", use_case.target_metric, state_dir / CONTEXT_FILE if state_dir is not None else None
        )
        live_context = use_case.live_context
        self.context_rules = (
            ContextRules(live_context, line_id, use_case.target_metric, self.context.intervals())
            if live_context is not None and line_id is not None
            else None
        )
        self._unforwarded: dict[tuple[str, str], ContextInterval] = {}  # the rules' intervals the host has not sent
        self.alerts = ViolationAlerter(
            raise_after=alert_raise_after,
            clear_after=alert_clear_after,
            path=state_dir / ALERTS_FILE if state_dir is not None else None,
        )
        self._wall_clock = wall_clock
        self.outbox = ReportOutbox(send_report, retry_after_s=report_retry_s, clock=clock)
        self.agent = UpdateAgent(
            thing_name,
            use_case,
            self.live,
            self.outbox.put,
            download,
            state_dir=state_dir,
            public_key=public_key,
            architecture=architecture,
            runtime_version=runtime_version,
            line_id=line_id,
        )

    @property
    def current(self) -> ActiveModel | None:
        return self.agent.current

    def periodic_status(self) -> PeriodicStatus:
        """What the runner says every few minutes: it runs, with this model (or none yet)."""
        current = self.current
        return PeriodicStatus(
            thing_name=self.agent.thing_name,
            deployment_id=current.deployment_id if current else None,
            model_id=current.model_id if current else None,
            version=current.version if current else None,
            sent_at=datetime.now(UTC),
        )

    def restore(self) -> ActiveModel | None:
        """Serve the last verified model persisted in state_dir, if any."""
        return self.agent.restore()

    def add(self, samples: Sequence[Sample]) -> int:
        if self.context_rules is not None:
            self.context_rules.observe(samples)
        return self.live.add(samples)

    def score(self, now_ms: int) -> list[Sample]:
        """Prediction samples due at now_ms (event time): `predict(now_ms).samples`."""
        return self.predict(now_ms).samples

    def predict(self, now_ms: int) -> Scored:
        """The prediction due at now_ms (event time), classified against the limits in force at its
        window's end, and the alert events it decides; rolls back a model that keeps failing on live data."""
        self._keep_live_context()
        live = self.live.maybe_predict(now_ms)
        if self.agent.watch() is not None:
            self.outbox.flush()
        if live is None:
            return Scored([])
        samples = [live.sample(self.use_case)]
        if self.line_id is None:
            return Scored(samples)
        message = self.prediction_message(live)
        return Scored(samples, message, self.alerts.observe(message))

    def prediction_message(self, live: LivePrediction) -> PredictionMessage:
        made_at = datetime.fromtimestamp(live.window_end_ms / 1000, UTC)
        spec = self.context.limits_at(made_at)
        scorer = self.live_identity(live)
        sent_at = self._wall_clock()
        predicted_for = made_at + timedelta(seconds=self.use_case.horizon_s)
        return PredictionMessage(
            thing_name=self.agent.thing_name,
            line_id=self.line_id,
            model=scorer,
            target_metric=self.use_case.target_metric,
            made_at=made_at,
            horizon_s=self.use_case.horizon_s,
            label_window_s=self.use_case.label_window_s,
            predicted_level=live.level,
            violation_class=live.scorer.classify(live.level, spec.lower, spec.upper) if spec else None,
            spec=spec,
            run_id=self.context.run_at(made_at),
            sent_at=sent_at,
            lead_time_s=(predicted_for - sent_at).total_seconds(),
        )

    def live_identity(self, live: LivePrediction) -> ModelIdentity:
        """Who made `live`: the scorer's model, with the deployment that installed it when it is the current one."""
        scorer = live.scorer
        current = self.current
        same = current is not None and (current.model_id, current.version) == (scorer.model_id, scorer.version)
        return ModelIdentity(
            model_id=scorer.model_id,
            version=scorer.version,
            deployment_id=current.deployment_id if same else None,
            precision=scorer.precision,
            decision_margin=scorer.decision_margin,
        )

    def add_context(self, intervals: Sequence[ContextInterval]) -> int:
        """Take context intervals of this line (run, limits, state); see ContextStore.add."""
        return self.context.add(intervals)

    def _keep_live_context(self) -> None:
        if self.context_rules is None:
            return
        made = self.context_rules.take()
        if made:
            self.context.add(made)
            self._unforwarded.update(((i.kind.value, i.interval_id), i) for i in made)
            for key in list(self._unforwarded)[: -self.context_rules.MAX_UNSENT]:  # a host that never sends them
                del self._unforwarded[key]

    def take_live_context(self) -> list[ContextInterval]:
        """The intervals the use case's live_context rules made or extended since the last call (kept in the
        context store already): the host forwards them to the cloud as it does an adapter's."""
        self._keep_live_context()
        taken, self._unforwarded = list(self._unforwarded.values()), {}
        return taken

    def ready_for_health_check(self) -> bool:
        """True once the live data fills a whole window without gaps while the line produces (the use
        case's productive states), so a new model is judged on data it would score, not on idle time."""
        window = self.live.latest_window()
        return window is not None and window.complete and window.productive

    def apply(self, update: ModelUpdate) -> ModelStatusReport:
        """Verify and apply `update` (or refuse it), and send its report."""
        report = self.agent.handle(update)
        log.info(
            "update %s %s (deployment %s): %s %s",
            update.model_id,
            update.version,
            update.deployment_id,
            report.status.value,
            report.reason,
        )
        self.outbox.flush()
        return report
