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
from datetime import datetime
from pathlib import Path

from edgeloop.schemas import ModelStatusReport, ModelUpdate, PeriodicStatus, UseCaseConfig
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.model import Architecture

from .agent import ActiveModel, UpdateAgent, s3_download
from .runner import LiveScorer

log = logging.getLogger(__name__)

Sample = tuple[str, int, float]
REPORT_RETRY_S = 5.0  # between attempts to send a status report that failed


class ReportOutbox:
    """Status reports in the order they were decided; one that cannot be sent now waits for the next flush.

    `send` raises on failure. A lost report would leave the cloud guessing about the device, so
    nothing is dropped; the order is kept so an APPLIED never overtakes the ROLLED_BACK that follows it.
    """

    def __init__(
        self,
        send: Callable[[ModelStatusReport], None],
        *,
        retry_after_s: float = REPORT_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._reports: list[ModelStatusReport] = []
        self._lock = threading.Lock()
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._failed_at: float | None = None

    def put(self, report: ModelStatusReport) -> None:
        with self._lock:
            self._reports.append(report)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._reports)

    def flush(self) -> int:
        """Send what is queued, oldest first, until one fails; returns how many were sent."""
        sent = 0
        with self._lock:
            while self._reports:
                report = self._reports[0]
                try:
                    self._send(report)
                except Exception as exc:  # any transport's failure: keep it for the next flush
                    self._failed_at = self._clock()
                    log.warning(
                        "status report %s %s %s not sent yet: %s: %s",
                        report.model_id,
                        report.version,
                        report.status.value,
                        type(exc).__name__,
                        getattr(exc, "message", None) or exc,
                    )
                    break
                self._reports.pop(0)
                self._failed_at = None
                sent += 1
        return sent

    def retry(self) -> int:
        """flush(), unless the last attempt failed less than retry_after_s ago (or nothing waits)."""
        with self._lock:
            if not self._reports:
                return 0
            if self._failed_at is not None and self._clock() - self._failed_at < self.retry_after_s:
                return 0
        return self.flush()


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
    ) -> None:
        """public_key, architecture, runtime_version, line_id: what the update agent checks updates against
        (see UpdateAgent)."""
        self.use_case = use_case
        self.live = LiveScorer(use_case)
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
        return self.live.add(samples)

    def score(self, now_ms: int) -> list[Sample]:
        """Predictions due at now_ms (event time); rolls back a model that keeps failing on live data."""
        predictions = self.live.maybe_score(now_ms)
        if self.agent.watch() is not None:
            self.outbox.flush()
        return predictions

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
