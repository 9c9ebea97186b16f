"""UpdateAgent: only a verified, healthy payload replaces the running model; every outcome is reported."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest
from linear_payloads import last_cold_od_payload
from moto import mock_aws

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.greengrass_components.model_runner.agent import (
    ACTIVE_META,
    ACTIVE_PAYLOAD,
    UpdateAgent,
    s3_download,
)
from edgeloop.greengrass_components.model_runner.runner import LiveScorer
from edgeloop.schemas import DeviceStatus, ModelUpdate, Precision, feature_schema_hash, load_use_case

USE_CASE = load_use_case("extrusion")
START_MS = 1_767_225_600_000
THING = "gw-line-1"


def payload(
    version: str = "1.0.0", *, bias: float = 0.0, weight: float = 1.0, features: list[str] | None = None
) -> bytes:
    """A linear model predicting weight * (last cold OD of the window) + bias."""
    return last_cold_od_payload(version, bias=bias, weight=weight, features=features)


def update_for(data: bytes, version: str = "1.0.0", **overrides) -> ModelUpdate:
    fields = dict(
        deployment_id=f"dep-{version}",
        model_id="extrusion-line-1",
        version=version,
        precision=Precision.FP32,
        payload_uri=f"s3://edgeloop-models/models/extrusion-line-1/{version}/fp32.npz",
        sha256=hashlib.sha256(data).hexdigest(),
        features=USE_CASE.feature_names,
        feature_schema_hash=feature_schema_hash(USE_CASE.feature_names),
    )
    fields.update(overrides)
    return ModelUpdate(**fields)


class Store:
    """Stands in for S3: uri -> bytes, counting downloads."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.downloads = 0

    def put(self, update: ModelUpdate, data: bytes) -> ModelUpdate:
        self.objects[update.payload_uri] = data
        return update

    def __call__(self, uri: str) -> bytes:
        self.downloads += 1
        return self.objects[uri]


@pytest.fixture
def live() -> LiveScorer:
    scorer = LiveScorer(USE_CASE)
    scorer.add(ExtrusionLineSimulator("line-1", seed=2, start_ms=START_MS).advance(600))
    return scorer


@pytest.fixture
def store() -> Store:
    return Store()


def make_agent(live, store, tmp_path, **kwargs):
    sent = []
    agent = UpdateAgent(THING, USE_CASE, live, sent.append, store, state_dir=tmp_path / "model", **kwargs)
    return agent, sent


def test_applies_a_verified_healthy_model_and_persists_it(live, store, tmp_path):
    agent, sent = make_agent(live, store, tmp_path)
    data = payload()
    report = agent.handle(store.put(update_for(data), data))
    assert report.status is DeviceStatus.APPLIED, report.reason
    assert "health check passed" in report.reason
    assert sent == [report] and report.thing_name == THING and report.deployment_id == "dep-1.0.0"
    assert live.active.version == "1.0.0"
    assert (tmp_path / "model" / ACTIVE_PAYLOAD).read_bytes() == data
    assert json.loads((tmp_path / "model" / ACTIVE_META).read_text())["version"] == "1.0.0"

    restarted_live = LiveScorer(USE_CASE)
    restarted, _ = make_agent(restarted_live, Store(), tmp_path)
    active = restarted.restore()
    assert active.version == "1.0.0" and restarted_live.active.version == "1.0.0"


def test_the_same_update_twice_downloads_once(live, store, tmp_path):
    agent, sent = make_agent(live, store, tmp_path)
    data = payload()
    update = store.put(update_for(data), data)
    agent.handle(update)
    again = agent.handle(update)
    assert again.status is DeviceStatus.APPLIED and again.reason == "already active"
    assert store.downloads == 1


@pytest.mark.parametrize(
    "case, expected",
    [
        ("sha256", "sha256 mismatch"),
        ("schema", "feature schema mismatch"),
        ("implausible", "implausible"),
        ("non_finite", "not finite"),
        ("download", "download of s3://"),
        ("version", "the update announced"),
    ],
)
def test_rejections_keep_the_running_model(live, store, tmp_path, case, expected):
    agent, sent = make_agent(live, store, tmp_path)
    good = payload("1.0.0")
    agent.handle(store.put(update_for(good), good))
    bad_data, update = payload("2.0.0"), None
    if case == "sha256":
        update = update_for(bad_data, "2.0.0", sha256="0" * 64)
    elif case == "schema":
        other = [*USE_CASE.feature_names[:-1], "humidity__mean"]
        update = update_for(bad_data, "2.0.0", features=other, feature_schema_hash=feature_schema_hash(other))
    elif case == "implausible":
        bad_data = payload("2.0.0", bias=1000.0)
    elif case == "non_finite":
        bad_data = payload("2.0.0", weight=float("inf"))
    elif case == "version":
        update = update_for(bad_data, "2.1.0")
    update = update or update_for(bad_data, "2.0.0")
    if case != "download":
        store.put(update, bad_data)
    report = agent.handle(update)
    assert report.status is DeviceStatus.REJECTED
    assert expected in report.reason
    assert sent[-1] == report
    assert live.active.version == "1.0.0"
    assert json.loads((tmp_path / "model" / ACTIVE_META).read_text())["version"] == "1.0.0"


def test_payload_with_other_features_is_refused_by_the_scorer(live, store, tmp_path):
    agent, _ = make_agent(live, store, tmp_path)
    other = [*USE_CASE.feature_names[:-1], "humidity__mean"]
    data = payload(features=other)
    report = agent.handle(store.put(update_for(data), data))  # the update claims the device's schema
    assert report.status is DeviceStatus.REJECTED and "feature schema mismatch" in report.reason
    assert live.active is None


def test_latency_budget(live, store, tmp_path):
    agent, _ = make_agent(live, store, tmp_path, latency_budget_ms=0.0)
    data = payload()
    report = agent.handle(store.put(update_for(data), data))
    assert report.status is DeviceStatus.REJECTED and "latency" in report.reason


def test_no_live_data_no_health_check(store, tmp_path):
    empty = LiveScorer(USE_CASE)
    agent, _ = make_agent(empty, store, tmp_path)
    data = payload()
    report = agent.handle(store.put(update_for(data), data))
    assert report.status is DeviceStatus.REJECTED and "no live data" in report.reason


def test_rollback_after_repeated_live_failures(live, store, tmp_path):
    agent, sent = make_agent(live, store, tmp_path)
    for version in ("1.0.0", "1.1.0"):
        data = payload(version)
        agent.handle(store.put(update_for(data, version), data))
    assert agent.watch() is None
    live.consecutive_failures = 3
    report = agent.watch()
    assert report.status is DeviceStatus.ROLLED_BACK and report.version == "1.1.0"
    assert live.active.version == "1.0.0" and agent.current.version == "1.0.0"
    assert json.loads((tmp_path / "model" / ACTIVE_META).read_text())["version"] == "1.0.0"
    assert agent.rollback("again") is None, "only one step back is kept"


def test_corrupt_persisted_model_is_not_served(live, store, tmp_path):
    agent, _ = make_agent(live, store, tmp_path)
    data = payload()
    agent.handle(store.put(update_for(data), data))
    (tmp_path / "model" / ACTIVE_PAYLOAD).write_bytes(data[:-10] + b"0123456789")
    fresh = LiveScorer(USE_CASE)
    restarted, _ = make_agent(fresh, Store(), tmp_path)
    assert restarted.restore() is None and fresh.active is None


def test_s3_download_reads_the_object():
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_object(Bucket="models", Key="a/b/fp32.npz", Body=b"weights")
        assert s3_download("s3://models/a/b/fp32.npz") == b"weights"
    with pytest.raises(ValueError, match="payload_uri"):
        s3_download("https://models/a")
