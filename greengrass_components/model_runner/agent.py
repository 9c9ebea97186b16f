"""The gateway's update agent: download, verify, health-check, swap, persist, report.

An update is applied only when every check passes; until then the running model keeps scoring.
The applied model is persisted (payload + a small JSON) so a restarted gateway serves the last
verified model without asking the cloud again.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edgeloop.schemas import DeviceStatus, ModelStatusReport, ModelUpdate, UseCaseConfig, feature_schema_hash

from .runner import LiveScorer
from .scorer import PayloadRejected, Scorer, load_payload

log = logging.getLogger(__name__)

ACTIVE_PAYLOAD = "active-model.npz"
ACTIVE_META = "active-model.json"
LATENCY_BUDGET_MS = 50.0  # per live prediction; the stride is 30 s, but a gateway has other work
LATENCY_TRIALS = 5
MIN_PLAUSIBLE_SPREAD = 0.1  # share of |median target|: the band a prediction may stray from recent values


def s3_download(uri: str) -> bytes:
    """Bytes of an s3://bucket/key object (boto3 honours AWS_ENDPOINT_URL for the local runtime)."""
    from edgeloop.functions.common.aws import client

    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"payload_uri={uri!r} is not s3://bucket/key")
    bucket, key = uri[5:].split("/", 1)
    return client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


@dataclass(frozen=True)
class ActiveModel:
    deployment_id: str
    model_id: str
    version: str
    precision: str
    sha256: str
    applied_at: str


class HealthCheckFailed(Exception):
    pass


class UpdateAgent:
    def __init__(
        self,
        thing_name: str,
        use_case: UseCaseConfig,
        live_scorer: LiveScorer,
        report: Callable[[ModelStatusReport], None],
        download: Callable[[str], bytes] = s3_download,
        *,
        state_dir: Path | None = None,
        latency_budget_ms: float = LATENCY_BUDGET_MS,
        max_consecutive_failures: int = 3,
    ) -> None:
        self.thing_name = thing_name
        self.use_case = use_case
        self.live = live_scorer
        self._report = report
        self._download = download
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.latency_budget_ms = latency_budget_ms
        self.max_consecutive_failures = max_consecutive_failures
        self.expected_schema_hash = feature_schema_hash(use_case.feature_names)
        self.current: ActiveModel | None = None
        self._previous: tuple[ActiveModel, bytes] | None = None
        self._current_payload: bytes | None = None
        self._lock = threading.Lock()
        self.reports: list[ModelStatusReport] = []

    # --- updates ----------------------------------------------------------------------------------
    def handle(self, update: ModelUpdate) -> ModelStatusReport:
        """Apply `update` or refuse it; the report is sent through `report` and returned."""
        with self._lock:
            try:
                reason = self._apply(update)
                status = DeviceStatus.APPLIED
            except (PayloadRejected, HealthCheckFailed) as exc:
                reason = exc.reason if isinstance(exc, PayloadRejected) else str(exc)
                status = DeviceStatus.REJECTED
            if status is DeviceStatus.REJECTED:
                log.warning("update %s %s rejected: %s", update.model_id, update.version, reason)
            return self._send(update.deployment_id, update.model_id, update.version, status, reason)

    def _apply(self, update: ModelUpdate) -> str:
        if update.feature_schema_hash != self.expected_schema_hash or update.features != self.use_case.feature_names:
            raise PayloadRejected(
                f"feature schema mismatch: update expects {update.feature_schema_hash}, device computes "
                f"{self.expected_schema_hash} ({len(self.use_case.feature_names)} features of use case "
                f"{self.use_case.use_case!r})"
            )
        current = self.current
        if current and (current.model_id, current.version, current.sha256) == (
            update.model_id,
            update.version,
            update.sha256,
        ):
            return "already active"
        try:
            payload = self._download(update.payload_uri)
        except Exception as exc:  # any download failure is a refusal the cloud must hear about
            raise PayloadRejected(f"download of {update.payload_uri} failed: {type(exc).__name__}: {exc}") from exc
        scorer = load_payload(
            payload, expected_sha256=update.sha256, expected_feature_schema_hash=self.expected_schema_hash
        )
        if (scorer.model_id, scorer.version) != (update.model_id, update.version):
            raise PayloadRejected(
                f"payload is {scorer.model_id} {scorer.version}, the update announced {update.model_id} {update.version}"
            )
        detail = self.health_check(scorer)
        active = ActiveModel(
            deployment_id=update.deployment_id,
            model_id=update.model_id,
            version=update.version,
            precision=update.precision.value,
            sha256=update.sha256,
            applied_at=datetime.now(UTC).isoformat(),
        )
        try:
            self._persist(active, payload)
        except OSError as exc:
            raise HealthCheckFailed(f"could not persist the model in {self.state_dir}: {exc}") from exc
        self.live.swap(scorer)
        if self.current is not None and self._current_payload is not None:
            self._previous = (self.current, self._current_payload)
        self.current, self._current_payload = active, payload
        log.info("applied %s %s (%s)", update.model_id, update.version, detail)
        return detail

    def health_check(self, scorer: Scorer) -> str:
        """Score the live window with the candidate: finite, plausible, fast enough. Returns a summary."""
        window = self.live.latest_window()
        if window is None:
            raise HealthCheckFailed("health check impossible: no live data yet")
        latencies = []
        prediction = float("nan")
        for _ in range(LATENCY_TRIALS):
            started = time.perf_counter()
            try:
                prediction = scorer.predict_one(window.features)
            except Exception as exc:
                raise HealthCheckFailed(f"health check: scorer failed on the live window: {exc}") from exc
            latencies.append((time.perf_counter() - started) * 1000)
        latency = statistics.median(latencies)
        if not np.isfinite(prediction):
            raise HealthCheckFailed(f"health check: prediction {prediction} on the live window is not finite")
        if latency > self.latency_budget_ms:
            raise HealthCheckFailed(
                f"health check: median latency {latency:.1f} ms exceeds the budget of {self.latency_budget_ms:.1f} ms"
            )
        recent = self.live.recent_target_values()
        recent = recent[np.isfinite(recent)]
        if len(recent) == 0:
            raise HealthCheckFailed(f"health check impossible: no recent {self.use_case.target_metric} readings")
        low, high, median = float(recent.min()), float(recent.max()), float(np.median(recent))
        spread = max(high - low, MIN_PLAUSIBLE_SPREAD * abs(median))
        if not low - spread <= prediction <= high + spread:
            raise HealthCheckFailed(
                f"health check: prediction {prediction:.6g} is implausible next to recent "
                f"{self.use_case.target_metric} in [{low:.6g}, {high:.6g}] (allowed [{low - spread:.6g}, {high + spread:.6g}])"
            )
        return f"health check passed: prediction {prediction:.6g}, recent [{low:.6g}, {high:.6g}], {latency:.2f} ms"

    # --- after the swap ---------------------------------------------------------------------------
    def watch(self) -> ModelStatusReport | None:
        """Roll back when the active model keeps failing on live data; returns the report if it did."""
        if self.live.consecutive_failures < self.max_consecutive_failures or self.current is None:
            return None
        return self.rollback(f"{self.live.consecutive_failures} consecutive live scoring failures")

    def rollback(self, reason: str) -> ModelStatusReport | None:
        """Go back to the model active before the last update, and report the failed one rolled back."""
        with self._lock:
            failed = self.current
            if failed is None or self._previous is None or self.live.rollback() is None:
                return None
            previous, payload = self._previous
            self._persist(previous, payload)
            self.current, self._current_payload, self._previous = previous, payload, None
            return self._send(failed.deployment_id, failed.model_id, failed.version, DeviceStatus.ROLLED_BACK, reason)

    # --- persistence ------------------------------------------------------------------------------
    def _persist(self, active: ActiveModel, payload: bytes) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.state_dir / ACTIVE_PAYLOAD, payload)
        _write_atomic(self.state_dir / ACTIVE_META, json.dumps(asdict(active), indent=2).encode())

    def restore(self) -> ActiveModel | None:
        """Serve the persisted model again (verified as on arrival); None when there is none or it is bad."""
        if self.state_dir is None:
            return None
        meta_path, payload_path = self.state_dir / ACTIVE_META, self.state_dir / ACTIVE_PAYLOAD
        if not meta_path.exists():
            return None
        try:
            active = ActiveModel(**json.loads(meta_path.read_text()))
            payload = payload_path.read_bytes()
            scorer = load_payload(
                payload, expected_sha256=active.sha256, expected_feature_schema_hash=self.expected_schema_hash
            )
        except (OSError, ValueError, TypeError, PayloadRejected) as exc:
            log.error("persisted model in %s is unusable, serving none: %s", self.state_dir, exc)
            return None
        with self._lock:
            self.live.swap(scorer)
            self.current, self._current_payload = active, payload
        log.info("restored %s %s from %s", active.model_id, active.version, self.state_dir)
        return active

    # --- reporting --------------------------------------------------------------------------------
    def _send(
        self, deployment_id: str, model_id: str, version: str, status: DeviceStatus, reason: str
    ) -> ModelStatusReport:
        report = ModelStatusReport(
            thing_name=self.thing_name,
            deployment_id=deployment_id,
            model_id=model_id,
            version=version,
            status=status,
            reason=reason[:1000],
            sent_at=datetime.now(UTC),
        )
        self.reports.append(report)
        try:
            self._report(report)
        except Exception:  # the decision stands; the caller's transport logs and retries its own way
            log.exception("could not send the status report for %s %s", model_id, version)
        return report


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
