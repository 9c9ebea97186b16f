"""EventBridge's stand-in for the local stack: the scheduled and event-driven functions on a short local clock.

In AWS (cdk/constructs/ingestion.py, fleet.py): compaction runs every edgeloop:compactionIntervalMinutes
(hourly by default), rollups on its success, the metric packer on new curated objects, the wave
controller every minute, and the orchestrator on each model approval. Locally one worker thread runs these rounds, each every
`LocalSchedule` seconds (0 turns one off):

- compaction: compaction -> rollups (its on-success destination) -> metric packer for the lines
  whose curated objects are new or changed since the last round, whoever wrote them (compaction,
  `edgeloop backfill`): in AWS, curated/ "Object Created" events;
- wave_controller: one round (offline marking, rollout timeouts, rollbacks);
- approvals: packages approved since the last round -> orchestrator (edgeloop.local.approval);
- live_accuracy: one round (in AWS hourly): every line's landed predictions joined with the measured
  target once it has landed (EDGELOOP_LANDING_DELAY_MINUTES, set by the local account), per window
  and model version, written to monitoring/ (`edgeloop monitor` reads it); a degraded model's event
  goes to the local EventBridge bus.

Every invocation takes its turn with the bridge's (edgeloop.local.functions.logging_to); a failing
function is logged and counted, and its next round runs as usual (EventBridge goes on too).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from edgeloop.cloud.aws import client
from edgeloop.local import functions
from edgeloop.local.approval import ApprovalWatcher
from edgeloop.schemas import names

log = logging.getLogger(__name__)
SOURCE = "edgeloop.local.schedule"
_CURATED_LINE = re.compile(rf"^{names.CURATED_PREFIX}/line=([^/]+)/")
STOP_TIMEOUT_S = 60.0  # a compaction round over a lot of data may be running when we stop


@dataclass(frozen=True)
class LocalSchedule:
    """Seconds between rounds of each scheduled function; 0 = never."""

    compaction_s: float = 30.0
    wave_controller_s: float = 20.0
    approvals_s: float = 5.0
    live_accuracy_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("compaction_s", "wave_controller_s", "approvals_s", "live_accuracy_s"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"{name}={value!r} must be >= 0 seconds (0 turns it off)")

    def describe(self) -> str:
        parts = [(n, getattr(self, f"{n}_s")) for n in ("compaction", "wave_controller", "approvals", "live_accuracy")]
        return ", ".join(f"{n} every {s:g} s" if s else f"{n} off" for n, s in parts)


@dataclass
class _Job:
    name: str
    every_s: float
    run: Callable[[], object]
    due: float = 0.0
    runs: int = 0
    failures: int = 0


@dataclass
class SchedulerStats:
    runs: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None


class CuratedWatcher:
    """Which lines have curated objects created or rewritten since the last call (by key and ETag)."""

    def __init__(self, bucket: str | None = None) -> None:
        self.bucket = bucket
        self.seen: dict[str, str] = {}

    def changed_lines(self) -> list[str]:
        bucket = self.bucket or os.environ[names.DATA_BUCKET_ENV]
        paginator = client("s3").get_paginator("list_objects_v2")
        current: dict[str, str] = {}
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{names.CURATED_PREFIX}/"):
            current.update({item["Key"]: item.get("ETag", "") for item in page.get("Contents", [])})
        changed = [key for key, etag in current.items() if self.seen.get(key) != etag]
        self.seen = current
        return sorted({match.group(1) for key in changed if (match := _CURATED_LINE.match(key))})


class LocalScheduler:
    """Start with `.start()`, stop with `.stop()` (lets the round in progress finish)."""

    def __init__(self, schedule: LocalSchedule, lambda_log: TextIO) -> None:
        self.schedule = schedule
        self.lambda_log = lambda_log
        self.approvals = ApprovalWatcher()
        self.curated = CuratedWatcher()
        self.last_error: str | None = None
        now = time.monotonic()
        candidates = [
            _Job("compaction", schedule.compaction_s, self.compaction_round),
            _Job("wave_controller", schedule.wave_controller_s, self.wave_controller_round),
            _Job("approvals", schedule.approvals_s, self.approval_round),
            _Job("live_accuracy", schedule.live_accuracy_s, self.live_accuracy_round),
        ]
        self.jobs = [job for job in candidates if job.every_s > 0]
        for job in self.jobs:
            job.due = now + job.every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the rounds -------------------------------------------------------------------------------
    def compaction_round(self) -> dict:
        result = functions.compact_and_roll_up(self.lambda_log, source=SOURCE)
        line_ids = self.curated.changed_lines()
        if line_ids:
            functions.pack_lines(self.lambda_log, line_ids)
        return result

    def wave_controller_round(self) -> dict:
        return functions.wave_controller_round(self.lambda_log, source=SOURCE)

    def approval_round(self) -> list[dict]:
        return [functions.orchestrate(self.lambda_log, event) for event in self.approvals.poll()]

    def live_accuracy_round(self) -> dict:
        return functions.live_accuracy_round(self.lambda_log, source=SOURCE)

    # --- the clock --------------------------------------------------------------------------------
    def start(self) -> LocalScheduler:
        if self._thread is not None:
            raise RuntimeError("the scheduler is already started")
        self._thread = threading.Thread(target=self._loop, name="local-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("the scheduler was still running a round after %.0f s", STOP_TIMEOUT_S)
            self._thread = None

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            runs={j.name: j.runs for j in self.jobs},
            failures={j.name: j.failures for j in self.jobs},
            last_error=self.last_error,
        )

    def _loop(self) -> None:
        while self.jobs and not self._stop.is_set():
            job = min(self.jobs, key=lambda j: j.due)
            if self._stop.wait(max(0.0, job.due - time.monotonic())):
                return
            self.run_now(job)
            job.due = time.monotonic() + job.every_s

    def run_now(self, job: _Job) -> None:
        try:
            job.run()
        except Exception as exc:  # keep the clock going: the next round is the retry
            job.failures += 1
            self.last_error = f"{job.name} failed: {exc!r}"
            log.info("scheduled %s failed (see lambda.log): %r", job.name, exc)
        finally:
            job.runs += 1
