"""The gateway's update agent: download, verify, health-check, swap, persist, report.

An update is applied only when every check passes; until then the running model keeps scoring.
The applied model is persisted (payload + a small JSON) so a restarted gateway serves the last
verified model without asking the cloud again, and so is the version floor (update_order.VersionFloor:
the highest version accepted, whether a rollback went back from it, the last signed rollback's
issue time), so a replayed older update or rollback is refused after a restart as before it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from edgeloop.model_runtime.payload_checks import check_npz_bounds
from edgeloop.model_runtime.scorer import PayloadRejected, Scorer, load_payload
from edgeloop.model_runtime.signing import (
    SignatureRejected,
    parse_public_key,
    verify_identity_signature,
    verify_payload_signature,
    verify_signed_update,
)
from edgeloop.model_runtime.update_order import RunningModel, VersionFloor, next_floor
from edgeloop.schemas import DeviceStatus, ModelStatusReport, ModelUpdate, UseCaseConfig, feature_schema_hash
from edgeloop.schemas.common import semver_key, split_s3_uri
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.compatibility import KnownCapabilities, incompatibility
from edgeloop.schemas.model import Architecture
from edgeloop.schemas.signed_model import SignedIdentity

from .runner import LiveScorer

log = logging.getLogger(__name__)

ACTIVE_PAYLOAD = "active-model.npz"
ACTIVE_META = "active-model.json"
# The rollback slot: the model active before the last update, written before the active slot changes,
# so a crash between the active payload and its metadata still leaves one verified model on disk.
PREVIOUS_PAYLOAD = "previous-model.npz"
PREVIOUS_META = "previous-model.json"
# The version floor (update_order.VersionFloor), written before either slot changes: never lower than what runs.
FLOOR_FILE = "accepted-version.json"
MAX_FLOOR_FILE_BYTES = 4096
TMP_SUFFIX = ".tmp"
LATENCY_BUDGET_MS = 50.0  # per live prediction; the stride is 30 s, but a gateway has other work
LATENCY_TRIALS = 5
MIN_PLAUSIBLE_SPREAD = 0.1  # share of |median target|: the band a prediction may stray from recent values


def s3_download(uri: str) -> bytes:
    """Bytes of an s3://bucket/key object, with the token-exchange role's credentials (boto3 honours
    AWS_ENDPOINT_URL for the local runtime)."""
    import boto3  # loads only when an update arrives: the scorer's start-up stays light

    bucket, key = split_s3_uri(uri, what="payload_uri")
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


@dataclass(frozen=True)
class ActiveModel:
    deployment_id: str
    model_id: str
    version: str
    precision: str
    sha256: str
    applied_at: str
    signature: str | None = None  # re-verified on restore when the device requires signed payloads
    identity: dict | None = None  # the update's SignedIdentity (JSON), re-verified on restore

    def running(self) -> RunningModel:
        return RunningModel(self.model_id, self.version, self.sha256, self.deployment_id)


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
        public_key: str | None = None,
        architecture: Architecture | str | None = None,
        runtime_version: str | None = None,
        line_id: str | None = None,
    ) -> None:
        """public_key (base64 of the raw 32 bytes): updates must carry that key's Ed25519 signatures of the
        payload and of the model's identity (signing.verify_signed_update: this use case, `line_id`, no
        downgrade but a rollback); None accepts unsigned ones. line_id: this device's line (None: no
        line check). architecture / runtime_version: this device's, checked against the update's tier;
        None skips that check."""
        self.thing_name = thing_name
        self.use_case = use_case
        self.live = live_scorer
        self._report = report
        self._download = download
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.latency_budget_ms = latency_budget_ms
        self.max_consecutive_failures = max_consecutive_failures
        self.expected_schema_hash = feature_schema_hash(use_case.feature_names)
        self.public_key = parse_public_key(public_key, field="model signing public_key") if public_key else None
        self.architecture = Architecture(architecture) if architecture is not None else None
        self.runtime_version = runtime_version
        self.line_id = line_id
        if runtime_version is not None:
            semver_key(runtime_version)  # a device version that is not MAJOR.MINOR.PATCH fails here, not per update
        self.current: ActiveModel | None = None
        self._previous: tuple[ActiveModel, bytes] | None = None
        self.floor: VersionFloor | None = None  # persisted in FLOOR_FILE; enforced with a public key
        self._current_payload: bytes | None = None
        self._lock = threading.Lock()
        self.reports: list[ModelStatusReport] = []
        self.restore_problems: list[str] = []  # why a persisted slot was not served at the last restore()

    # --- updates ----------------------------------------------------------------------------------
    def handle(self, update: ModelUpdate) -> ModelStatusReport:
        """Apply `update` or refuse it; the report is sent through `report` and returned."""
        with self._lock:
            try:
                reason = self._apply(update)
                status = DeviceStatus.APPLIED
            except (PayloadRejected, SignatureRejected, HealthCheckFailed) as exc:
                reason = exc.reason if isinstance(exc, (PayloadRejected, SignatureRejected)) else str(exc)
                status = DeviceStatus.REJECTED
            if status is DeviceStatus.REJECTED:
                log.warning("update %s %s rejected: %s", update.model_id, update.version, reason)
            return self._send(update.deployment_id, update.model_id, update.version, status, reason)

    def _apply(self, update: ModelUpdate) -> str:
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
        scorer = self.verify(update, payload)
        detail = self.health_check(scorer)
        active = ActiveModel(
            deployment_id=update.deployment_id,
            model_id=update.model_id,
            version=update.version,
            precision=update.precision.value,
            sha256=update.sha256,
            applied_at=datetime.now(UTC).isoformat(),
            signature=update.signature,
            identity=update.identity.model_dump(mode="json") if update.identity is not None else None,
        )
        previous = (self.current, self._current_payload) if self.current and self._current_payload else None
        floor = next_floor(self.floor, update)
        try:
            self._persist_floor(floor)
            self._persist(active, payload, previous)
        except OSError as exc:
            raise HealthCheckFailed(f"could not persist the model in {self.state_dir}: {exc}") from exc
        self.floor = floor
        self.live.swap(scorer)
        if self.current is not None and self._current_payload is not None:
            self._previous = (self.current, self._current_payload)
        self.current, self._current_payload = active, payload
        log.info("applied %s %s (%s)", update.model_id, update.version, detail)
        return detail

    # --- verification (in this order: integrity, origin, compatibility, then the bytes' own content) ---
    def verify(self, update: ModelUpdate, payload: bytes) -> Scorer:
        """The loaded candidate, or PayloadRejected / SignatureRejected naming the check that failed."""
        if update.payload_bytes is not None and len(payload) != update.payload_bytes:
            what = "truncated" if len(payload) < update.payload_bytes else "oversized"
            raise PayloadRejected(
                f"payload {what}: {update.payload_uri} has {len(payload)} bytes, the update announces "
                f"payload_bytes={update.payload_bytes}"
            )
        digest = hashlib.sha256(payload).hexdigest()
        if digest != update.sha256:
            raise PayloadRejected(
                f"sha256 mismatch: payload {update.payload_uri} ({len(payload)} bytes) is {digest}, "
                f"the update announces {update.sha256}"
            )
        verify_signed_update(
            update,
            digest,
            self.public_key,
            use_case=self.use_case.use_case,
            line_id=self.line_id,
            running=self.current.running() if self.current is not None else None,
            previous=self._previous[0].running() if self._previous is not None else None,
            floor=self.floor,
        )
        self._check_compatibility(update)
        self._check_feature_schema(update)
        _check_bounds(payload)
        scorer = load_payload(payload, expected_sha256=digest, expected_feature_schema_hash=self.expected_schema_hash)
        if (scorer.model_id, scorer.version, scorer.precision) != (update.model_id, update.version, update.precision):
            raise PayloadRejected(
                f"payload is {scorer.model_id} {scorer.version} {scorer.precision.value}, the update announced "
                f"{update.model_id} {update.version} {update.precision.value}"
            )
        return scorer

    def _check_compatibility(self, update: ModelUpdate) -> None:
        # The fleet's own rule, so the device refuses exactly what the planner would not have sent.
        problem = incompatibility(update, KnownCapabilities(self.architecture, self.runtime_version))
        if problem is not None:
            raise PayloadRejected(problem.refusal())

    def _check_feature_schema(self, update: ModelUpdate) -> None:
        if update.feature_schema_hash != self.expected_schema_hash or update.features != self.use_case.feature_names:
            raise PayloadRejected(
                f"feature schema mismatch: update expects {update.feature_schema_hash}, device computes "
                f"{self.expected_schema_hash} ({len(self.use_case.feature_names)} features of use case "
                f"{self.use_case.use_case!r})"
            )

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
            self._persist(previous, payload, None)
            self.current, self._current_payload, self._previous = previous, payload, None
            return self._send(failed.deployment_id, failed.model_id, failed.version, DeviceStatus.ROLLED_BACK, reason)

    # --- persistence ------------------------------------------------------------------------------
    def _persist_floor(self, floor: VersionFloor) -> None:
        if self.state_dir is None or floor == self.floor:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        document = {"scope": self._floor_scope(), **asdict(floor)}
        write_atomic(self.state_dir / FLOOR_FILE, json.dumps(document, indent=2).encode())

    def _floor_scope(self) -> str:
        """Versions are ordered per use case and line (the registry numbers each line's model package group)."""
        return f"{self.use_case.use_case}/{self.line_id or '*'}"

    def _restore_floor(self) -> VersionFloor | None:
        path = self.state_dir / FLOOR_FILE
        try:
            if not path.exists():
                return None
            data = path.read_bytes()
            if len(data) > MAX_FLOOR_FILE_BYTES:
                raise ValueError(f"{path} has {len(data)} bytes, at most {MAX_FLOOR_FILE_BYTES} allowed")
            document = json.loads(data)
            scope = document.pop("scope", None) if isinstance(document, dict) else None
            if scope != self._floor_scope():  # a gateway moved to another line or use case starts afresh
                log.warning(
                    "version floor %s is for %r, this device serves %r: not used", path, scope, self._floor_scope()
                )
                return None
            return VersionFloor.from_json(document, where=str(path))
        except (OSError, ValueError, RecursionError) as exc:
            self.restore_problems.append(f"{FLOOR_FILE} is unusable: {exc}")
            log.error("version floor %s is unusable, falling back to the restored model's version: %s", path, exc)
            return None

    def _persist(self, active: ActiveModel, payload: bytes, previous: tuple[ActiveModel, bytes] | None) -> None:
        """Rollback slot first, then the active one; each slot is payload then metadata (its sha256 pointer)."""
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if previous is not None:
            _write_slot(self.state_dir, PREVIOUS_PAYLOAD, PREVIOUS_META, *previous)
        _write_slot(self.state_dir, ACTIVE_PAYLOAD, ACTIVE_META, active, payload)
        if previous is None:  # a rollback: the slot held the model just reinstated
            for name in (PREVIOUS_META, PREVIOUS_PAYLOAD):
                (self.state_dir / name).unlink(missing_ok=True)

    def restore(self) -> ActiveModel | None:
        """Serve the persisted model again (verified as on arrival), else the rollback slot's; None when neither is good.

        Why a slot was skipped is logged and kept in `restore_problems`.
        """
        self.restore_problems = []
        if self.state_dir is None:
            return None
        for leftover in self.state_dir.glob(f".*{TMP_SUFFIX}"):  # a write a crash cut short
            leftover.unlink(missing_ok=True)
        self.floor = self._restore_floor()
        for payload_name, meta_name in ((ACTIVE_PAYLOAD, ACTIVE_META), (PREVIOUS_PAYLOAD, PREVIOUS_META)):
            loaded = self._load_slot(payload_name, meta_name)
            if loaded is None:
                continue
            active, payload, scorer = loaded
            with self._lock:
                self.live.swap(scorer)
                self.current, self._current_payload = active, payload
                if self.floor is None or semver_key(active.version) > semver_key(self.floor.version):
                    # a state directory from before the floor file (or with a damaged one): what ran is the floor
                    self.floor = VersionFloor(active.version, active.model_id, active.deployment_id)
            log.info("restored %s %s from %s in %s", active.model_id, active.version, payload_name, self.state_dir)
            return active
        if self.restore_problems:
            log.error("no verified model in %s, serving none: %s", self.state_dir, "; ".join(self.restore_problems))
        return None

    def _load_slot(self, payload_name: str, meta_name: str) -> tuple[ActiveModel, bytes, Scorer] | None:
        meta_path, payload_path = self.state_dir / meta_name, self.state_dir / payload_name
        if not meta_path.exists():
            return None
        try:
            active = ActiveModel(**json.loads(meta_path.read_text()))
            payload = payload_path.read_bytes()
            digest = hashlib.sha256(payload).hexdigest()
            if digest != active.sha256:  # a slot damaged on disk: say so before any other check
                raise PayloadRejected(f"sha256 mismatch: {payload_name} is {digest}, its record says {active.sha256}")
            if self.public_key is not None:
                self._verify_persisted(active, digest)
            _check_bounds(payload)
            scorer = load_payload(
                payload, expected_sha256=active.sha256, expected_feature_schema_hash=self.expected_schema_hash
            )
        except (OSError, ValueError, TypeError, PayloadRejected, SignatureRejected) as exc:
            reason = exc.reason if isinstance(exc, PayloadRejected) else f"{type(exc).__name__}: {exc}"
            self.restore_problems.append(f"{payload_name} is unusable: {reason}")
            log.error("persisted model %s in %s is unusable: %s", payload_name, self.state_dir, reason)
            return None
        return active, payload, scorer

    def _verify_persisted(self, active: ActiveModel, digest: str) -> None:
        """The persisted slot's signatures; a slot written before identities were signed has only the payload's."""
        verify_payload_signature(digest, active.signature, self.public_key)
        if active.identity is not None:
            what = f"persisted {active.model_id} {active.version}"
            document = verify_identity_signature(SignedIdentity(**active.identity), self.public_key, what=what)
            if (document.model_id, document.version) != (active.model_id, active.version) or (
                digest not in document.payload_sha256.values()
            ):
                raise SignatureRejected(f"signed identity of {what} names another model or payload")

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


def _check_bounds(payload: bytes) -> None:
    try:
        check_npz_bounds(payload)
    except ValueError as exc:
        raise PayloadRejected(f"payload refused before loading: {exc}") from exc


def _write_slot(state_dir: Path, payload_name: str, meta_name: str, model: ActiveModel, payload: bytes) -> None:
    write_atomic(state_dir / payload_name, payload)
    write_atomic(state_dir / meta_name, json.dumps(asdict(model), indent=2).encode())


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
