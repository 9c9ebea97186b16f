"""Acceptance: every bad update is refused with its reason, and the model applied before keeps serving.

The updates are real: a small XGBoost model exported and signed by the pipeline's export step, turned
into ModelUpdates by the orchestrator's own `model_updates`, then spoiled one way per case.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import numpy as np
import pytest
import xgboost as xgb

from edgeloop.cloud.fleet.planning import model_updates
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.greengrass_components.model_runner.agent import ACTIVE_META, ACTIVE_PAYLOAD, UpdateAgent
from edgeloop.greengrass_components.model_runner.runner import LiveScorer
from edgeloop.model_runtime.linear_format import LinearModel
from edgeloop.model_runtime.model_format import RUNTIME_VERSION, min_runtime_version, read_payload, write_payload
from edgeloop.model_runtime.signing import generate_private_key, public_key_b64, sign_identity, sign_payload
from edgeloop.sagemaker_pipelines.steps.export import ExportedModel, export_model
from edgeloop.sagemaker_pipelines.steps.registration import sign_identity_of
from edgeloop.sagemaker_pipelines.steps.train import TrainedModel
from edgeloop.schemas import DeviceStatus, ModelUpdate, Precision, feature_schema_hash, load_use_case
from edgeloop.schemas.common import semver_key
from edgeloop.schemas.model import Architecture, ModelMetrics

USE_CASE = load_use_case("extrusion")
FEATURES = USE_CASE.feature_names
START_MS = 1_767_225_600_000
THING = "gw-line-1"
MODEL_ID = "extrusion-line-1"
BUCKET = "edgeloop-models"
DEVICE_ARCHITECTURE = Architecture.ARMV7L
DEVICE_RUNTIME = RUNTIME_VERSION  # reads every tier this code exports


class Store:
    """Stands in for S3: uri -> bytes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def __call__(self, uri: str) -> bytes:
        return self.objects[uri]


@pytest.fixture(scope="module")
def live_features() -> np.ndarray:
    return _fresh_live().latest_window().features


def _fresh_live() -> LiveScorer:
    scorer = LiveScorer(USE_CASE)
    scorer.add(ExtrusionLineSimulator("line-1", seed=2, start_ms=START_MS).advance(600))
    return scorer


def trained_near(center: np.ndarray, seed: int) -> TrainedModel:
    """A small booster that predicts the window's last cold OD, trained on rows around the live window."""
    rng = np.random.default_rng(seed)
    X = (center + rng.normal(0, 0.05, size=(400, len(center))) * np.maximum(np.abs(center), 1.0)).astype(np.float32)
    y = X[:, FEATURES.index("cold_od_average__last")].astype(np.float64)
    booster = xgb.train(
        {"max_depth": 3, "eta": 0.3, "objective": "reg:squarederror", "nthread": 1, "seed": seed},
        xgb.DMatrix(X, label=y),
        num_boost_round=20,
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return TrainedModel(
        booster=booster,
        feature_names=FEATURES,
        metrics=ModelMetrics(mse=0.0, mae=0.0, n_train=300, n_test=100),
        training_start=now,
        training_end=now,
        X_test=X[300:],
        y_test=y[300:],
        training_data_sha256=hashlib.sha256(X.tobytes()).hexdigest(),
        test_start=now,
    )


def exported(version: str, center: np.ndarray, key, seed: int, line_id: str = "line-1") -> ExportedModel:
    """Exported and, with `key`, given its signed identity as the register step does."""
    export = export_model(
        trained_near(center, seed),
        model_id=MODEL_ID if line_id == "line-1" else f"{USE_CASE.use_case}-{line_id}",
        version=version,
        use_case=USE_CASE.use_case,
        line_ids=[line_id],
        target=USE_CASE.target_metric,
        precisions=(Precision.FP32, Precision.FP16_LEAVES),
        signing_key=key,
    )
    return sign_identity_of(export, key)


def deliverable(export: ExportedModel, store: Store, precision: Precision = Precision.FP32) -> ModelUpdate:
    """The orchestrator's update for one tier, with its payload in the store."""
    updates = model_updates(export.manifest, f"dep-{export.manifest.version}", BUCKET)
    for tier_precision, payload in export.payloads.items():
        store.objects[updates[tier_precision].payload_uri] = payload
    return updates[precision]


@pytest.fixture(scope="module")
def signing_key():
    return generate_private_key()


@pytest.fixture(scope="module")
def models(live_features, signing_key):
    """v1 (applied first) and the candidate v2, both signed."""
    return exported("1.0.0", live_features, signing_key, seed=1), exported("2.0.0", live_features, signing_key, seed=2)


@pytest.fixture
def device(tmp_path, models, signing_key):
    """An agent that requires signatures by `signing_key`, running v1; and a probe of v1's predictions."""
    store = Store()
    live = _fresh_live()
    sent = []
    agent = UpdateAgent(
        THING,
        USE_CASE,
        live,
        sent.append,
        store,
        state_dir=tmp_path / "model",
        public_key=public_key_b64(signing_key),
        architecture=DEVICE_ARCHITECTURE,
        runtime_version=DEVICE_RUNTIME,
        line_id="line-1",
    )
    first = agent.handle(deliverable(models[0], store))
    assert first.status is DeviceStatus.APPLIED, first.reason
    probe = np.random.default_rng(9).normal(live.latest_window().features, 0.01, size=(64, len(FEATURES)))
    before = live.active.predict(probe)
    return agent, live, store, sent, probe, before


def _tampered(payload: bytes) -> bytes:
    """Same length, one byte of the compressed arrays flipped (past the zip header)."""
    spoiled = bytearray(payload)
    spoiled[len(spoiled) // 2] ^= 0xFF
    return bytes(spoiled)


def _retarget(update: ModelUpdate, store: Store, payload: bytes, **fields) -> ModelUpdate:
    """The update pointing at `payload` (put under a new key) with `fields` changed."""
    uri = update.payload_uri.replace(".npz", f"-{hashlib.sha256(payload).hexdigest()[:8]}.npz")
    store.objects[uri] = payload
    return update.model_copy(update={"payload_uri": uri, **fields})


def case_tampered_in_transit(update, store, key, payload):
    """Bytes changed after signing; the update still announces the signed digest."""
    return _retarget(update, store, _tampered(payload))


def case_tampered_with_new_digest(update, store, key, payload):
    """Bytes changed after signing and the update's sha256 rewritten to match: only the signature can tell."""
    spoiled = _tampered(payload)
    return _retarget(update, store, spoiled, sha256=hashlib.sha256(spoiled).hexdigest())


def case_signed_by_another_key(update, store, key, payload):
    return update.model_copy(update={"signature": sign_payload(payload, generate_private_key())})


def case_unsigned(update, store, key, payload):
    return update.model_copy(update={"signature": None})


def case_wrong_architecture(update, store, key, payload):
    return update.model_copy(update={"architectures": [Architecture.X86_64, Architecture.AARCH64]})


def case_feature_schema_mismatch(update, store, key, payload):
    """A correctly signed payload and identity for another feature layout (the signer's mistake, not an attacker's)."""
    features = FEATURES[::-1]
    other = write_payload(
        LinearModel(weights=np.zeros(len(features), np.float32), bias=0.0),
        model_id=MODEL_ID,
        version=update.version,
        objective="reg:squarederror",
        base_score=0.0,
        features=features,
    )
    return _retarget(
        update,
        store,
        other,
        sha256=hashlib.sha256(other).hexdigest(),
        signature=sign_payload(other, key),
        identity=_identity_for(update, other, key),
        payload_bytes=len(other),
        features=features,
        feature_schema_hash=feature_schema_hash(features),
    )


def _identity_for(update: ModelUpdate, payload: bytes, key):
    document = update.identity.document
    digests = {**document.payload_sha256, update.precision.value: hashlib.sha256(payload).hexdigest()}
    return sign_identity(document.model_copy(update={"payload_sha256": digests}), key)


def case_truncated(update, store, key, payload):
    return _retarget(update, store, payload[: len(payload) * 2 // 3])


def case_truncated_old_document(update, store, key, payload):
    """An update document from before payload_bytes existed: the digest still catches the cut."""
    return _retarget(update, store, payload[: len(payload) * 2 // 3], payload_bytes=None)


CASES = [
    (case_tampered_in_transit, Precision.FP32, ["sha256 mismatch"]),
    (case_tampered_with_new_digest, Precision.FP32, ["signature", "does not verify", "configured key"]),
    (case_signed_by_another_key, Precision.FP32, ["signature", "does not verify"]),
    (case_unsigned, Precision.FP32, ["unsigned payload", "requires an Ed25519 signature"]),
    (case_wrong_architecture, Precision.FP32, ["architecture mismatch", "device is armv7l", "x86_64", "aarch64"]),
    (case_feature_schema_mismatch, Precision.FP32, ["feature schema mismatch"]),
    (case_truncated, Precision.FP32, ["payload truncated", "payload_bytes="]),
    (case_truncated_old_document, Precision.FP32, ["sha256 mismatch"]),
]


@pytest.mark.parametrize(("spoil", "precision", "expected"), CASES, ids=[c[0].__name__[5:] for c in CASES])
def test_refused_with_its_reason_and_the_previous_model_keeps_serving(
    device, models, signing_key, tmp_path, spoil, precision, expected
):
    agent, live, store, sent, probe, before = device
    candidate = deliverable(models[1], store, precision)
    update = spoil(candidate, store, signing_key, models[1].payloads[precision])

    report = agent.handle(update)

    assert report.status is DeviceStatus.REJECTED, report.reason
    for fragment in expected:
        assert fragment in report.reason, (fragment, report.reason)
    assert sent[-1] == report and report.version == "2.0.0"
    assert live.active.version == "1.0.0" and agent.current.version == "1.0.0"
    assert np.array_equal(live.active.predict(probe), before)  # bit for bit: nothing of v2 got in
    assert json.loads((tmp_path / "model" / ACTIVE_META).read_text())["version"] == "1.0.0"
    assert (tmp_path / "model" / ACTIVE_PAYLOAD).read_bytes() == models[0].payloads[Precision.FP32]


def test_the_unspoiled_candidate_is_applied(device, models):
    """The control: the same v2 the refusal cases start from is accepted, so each refusal is its spoiling's."""
    agent, live, store, sent, probe, before = device
    report = agent.handle(deliverable(models[1], store))
    assert report.status is DeviceStatus.APPLIED, report.reason
    assert live.active.version == "2.0.0"
    assert not np.array_equal(live.active.predict(probe), before)


def agent_at_runtime(tmp_path, signing_key, store, runtime_version: str) -> UpdateAgent:
    return UpdateAgent(
        THING,
        USE_CASE,
        _fresh_live(),
        lambda report: None,
        store,
        state_dir=tmp_path / "model",
        public_key=public_key_b64(signing_key),
        architecture=DEVICE_ARCHITECTURE,
        runtime_version=runtime_version,
    )


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16_LEAVES])
def test_a_tier_is_applied_on_its_minimum_runtime_and_refused_on_an_older_one(tmp_path, models, signing_key, precision):
    store = Store()
    update = deliverable(models[1], store, precision)
    minimum = update.min_runtime_version
    assert minimum == min_runtime_version(read_payload(models[1].payloads[precision])[0])
    major, minor, _ = semver_key(minimum)
    older = f"{major}.{minor - 1}.0" if minor else f"{major - 1}.9.0"

    refused = agent_at_runtime(tmp_path / "old", signing_key, store, older).handle(update)
    assert refused.status is DeviceStatus.REJECTED, refused.reason
    for fragment in ("runtime too old", f"runtime_version={older}", minimum):
        assert fragment in refused.reason, (fragment, refused.reason)

    applied = agent_at_runtime(tmp_path / "new", signing_key, store, minimum).handle(update)
    assert applied.status is DeviceStatus.APPLIED, applied.reason


def test_without_a_public_key_unsigned_updates_are_accepted(tmp_path, models):
    store = Store()
    agent = UpdateAgent(THING, USE_CASE, _fresh_live(), lambda report: None, store, state_dir=tmp_path / "model")
    report = agent.handle(deliverable(models[0], store).model_copy(update={"signature": None}))
    assert report.status is DeviceStatus.APPLIED, report.reason


def test_restore_refuses_a_persisted_model_the_key_does_not_vouch_for(device, tmp_path, signing_key):
    """A restarted gateway re-verifies the persisted payload's signature, not only its digest."""
    agent, *_ = device
    meta_path = tmp_path / "model" / ACTIVE_META
    meta = json.loads(meta_path.read_text())
    assert meta["signature"]
    restarted = UpdateAgent(
        THING, USE_CASE, LiveScorer(USE_CASE), lambda r: None, Store(), state_dir=tmp_path / "model",
        public_key=public_key_b64(signing_key),
    )  # fmt: skip
    assert restarted.restore().version == "1.0.0"

    meta["signature"] = sign_payload(b"something else", signing_key)
    meta_path.write_text(json.dumps(meta))
    refused = UpdateAgent(
        THING, USE_CASE, LiveScorer(USE_CASE), lambda r: None, Store(), state_dir=tmp_path / "model",
        public_key=public_key_b64(signing_key),
    )  # fmt: skip
    assert refused.restore() is None
    assert any("does not verify" in problem for problem in refused.restore_problems)


def test_exported_tiers_carry_verifiable_signatures(models, signing_key):
    from edgeloop.model_runtime.signing import verify_payload_signature

    for export in models:
        for tier in export.manifest.tiers:
            payload = export.payloads[tier.precision]
            assert tier.signature
            verify_payload_signature(hashlib.sha256(payload).hexdigest(), tier.signature, public_key_b64(signing_key))
        updates = model_updates(export.manifest, "dep", BUCKET)
        assert {u.signature for u in updates.values()} == {t.signature for t in export.manifest.tiers}
        assert all(u.payload_bytes and u.architectures and u.min_runtime_version for u in updates.values())
