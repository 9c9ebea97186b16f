"""Builders shared by the fleet tests: tables from names.*_TABLE_KEYS, devices, manifests, events."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import boto3

from edgeloop.schemas import (
    Architecture,
    CompatibilityTier,
    DeviceAnnouncement,
    DeviceRecord,
    DeviceStatus,
    IotRuleEvent,
    ModelManifest,
    ModelMetrics,
    ModelStatusReport,
    ModelUpdate,
    Precision,
    RolloutWave,
    feature_schema_hash,
    names,
)
from edgeloop.schemas.names import TableKeys

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DEVICE_TABLE = "test-devices"
DEPLOYMENT_TABLE = "test-deployments"
MODEL_BUCKET = "test-models"
FEATURES = ["speed__mean", "temp_die__mean", "cold_od__last"]
# What the rollout functions' settings need, with the local delivery (no component versions).
ROLLOUT_ENVIRONMENT = {
    names.DEVICE_TABLE_ENV: DEVICE_TABLE,
    names.DEPLOYMENT_TABLE_ENV: DEPLOYMENT_TABLE,
    names.MODEL_BUCKET_ENV: MODEL_BUCKET,
    names.DELIVERY_ENV: "local",
}


def create_table(name: str, keys: TableKeys) -> None:
    """A table as the CDK construct builds it: on-demand, string keys, GSIs projecting everything."""
    attributes = {keys.partition_key}
    key_schema = [{"AttributeName": keys.partition_key, "KeyType": "HASH"}]
    if keys.sort_key:
        attributes.add(keys.sort_key)
        key_schema.append({"AttributeName": keys.sort_key, "KeyType": "RANGE"})
    indexes = []
    for index_name, pk, sk in keys.indexes:
        index_keys = [{"AttributeName": pk, "KeyType": "HASH"}]
        attributes.add(pk)
        if sk:
            index_keys.append({"AttributeName": sk, "KeyType": "RANGE"})
            attributes.add(sk)
        indexes.append({"IndexName": index_name, "KeySchema": index_keys, "Projection": {"ProjectionType": "ALL"}})
    request = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)],
        "KeySchema": key_schema,
    }
    if indexes:
        request["GlobalSecondaryIndexes"] = indexes
    boto3.client("dynamodb").create_table(**request)


def create_fleet_tables() -> None:
    create_table(DEVICE_TABLE, names.DEVICE_TABLE_KEYS)
    create_table(DEPLOYMENT_TABLE, names.DEPLOYMENT_TABLE_KEYS)


def device(thing_name: str, **overrides) -> DeviceRecord:
    fields = {
        "thing_name": thing_name,
        "site": "plant-a",
        "line_id": "line-1",
        "use_case": "extrusion",
        "architecture": Architecture.X86_64,
        "runtime_version": "1.2.0",
        "supported_precisions": [Precision.FP32, Precision.FP16_LEAVES, Precision.QUANTIZED],
        "status": DeviceStatus.REGISTERED,
        "status_since": NOW - timedelta(hours=1),
        "last_seen": NOW - timedelta(minutes=5),
    }
    fields.update(overrides)
    return DeviceRecord(**fields)


def tier(precision: Precision, architectures: list[Architecture], min_runtime: str = "1.0.0") -> CompatibilityTier:
    return CompatibilityTier(
        precision=precision,
        architectures=architectures,
        min_runtime_version=min_runtime,
        payload_key=f"{names.MODELS_PREFIX}/extrusion-line-1/2.0.0/{precision.value}.npz",
        payload_bytes=77_000,
        sha256=(precision.value.encode().hex() * 8)[:64].ljust(64, "0"),
        max_abs_error=0.0 if precision is Precision.FP32 else 1e-3,
    )


def manifest(tiers: list[CompatibilityTier] | None = None, **overrides) -> ModelManifest:
    fields = {
        "model_id": "extrusion-line-1",
        "version": "2.0.0",
        "use_case": "extrusion",
        "line_ids": ["line-1"],
        "family": "xgboost",
        "target": "cold_od",
        "features": FEATURES,
        "feature_schema_hash": feature_schema_hash(FEATURES),
        "tiers": tiers
        or [
            tier(Precision.FP32, [Architecture.X86_64, Architecture.AARCH64]),
            tier(Precision.FP16_LEAVES, [Architecture.ARMV7L]),
        ],
        "training_start": NOW - timedelta(days=7),
        "training_end": NOW - timedelta(days=1),
        "training_data_sha256": "a" * 64,
        "metrics": ModelMetrics(mse=0.01, mae=0.05, n_train=1000, n_test=200),
        "created_at": NOW - timedelta(hours=2),
    }
    fields.update(overrides)
    return ModelManifest(**fields)


def announcement(thing: str = "gw-1", **overrides) -> DeviceAnnouncement:
    fields = {
        "thing_name": thing,
        "site": "plant-a",
        "line_id": "line-1",
        "use_case": "extrusion",
        "architecture": "aarch64",
        "runtime_version": "1.0.0",
        "supported_precisions": ["fp32"],
        "sent_at": NOW,
    }
    fields.update(overrides)
    return DeviceAnnouncement(**fields)


def rule_event(topic: str, document: dict | bytes, received_at: datetime = NOW) -> IotRuleEvent:
    payload = document if isinstance(document, bytes) else json.dumps(document).encode()
    return IotRuleEvent.from_message(topic, payload, int(received_at.timestamp() * 1000))


class RecordingDelivery:
    """A ModelDelivery that remembers what it was asked to deliver (and can be told to fail)."""

    def __init__(self, fail_times: int = 0) -> None:
        self.deliveries: list[tuple[str, RolloutWave, ModelUpdate]] = []
        self.fail_times = fail_times
        self.closed = False

    def deliver(self, deployment_id: str, wave: RolloutWave, update: ModelUpdate) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("broker unreachable")
        self.deliveries.append((deployment_id, wave, update))

    def close(self) -> None:
        self.closed = True

    @property
    def waves(self) -> list[int]:
        return [wave.index for _, wave, _ in self.deliveries]


def concurrently(count: int, action: Callable[[], object]) -> list:
    """Run `action` in `count` threads released at once; their results, or the first error raised."""
    barrier, results, errors = threading.Barrier(count), [], []

    def run_once() -> None:
        barrier.wait()
        try:
            results.append(action())
        except Exception as exc:  # noqa: BLE001 - raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run_once) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def status_report(
    thing: str, deployment_id: str, status: DeviceStatus, sent_at: datetime, *, version: str = "2.0.0", reason: str = ""
) -> ModelStatusReport:
    return ModelStatusReport(
        thing_name=thing,
        deployment_id=deployment_id,
        model_id="extrusion-line-1",
        version=version,
        status=status,
        reason=reason,
        sent_at=sent_at,
    )


class TickingClock:
    """Status reports of one test, each a second after the one before."""

    def __init__(self, start: datetime = NOW) -> None:
        self.now = start

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def report_each(devices, record, things, status: DeviceStatus, clock: TickingClock, **report_fields) -> None:
    """Each of `things` reports `status` for `record`'s rollout, as status intake records it."""
    from edgeloop.functions.status_intake.logic import record_report

    for thing in things:
        report = status_report(thing, record.deployment_id, status, clock.tick(), **report_fields)
        record_report(report, devices, now=clock.now)


def advance_rollout(devices, deployments, delivery, record, now: datetime = NOW):
    from edgeloop.cloud.fleet.waves import advance

    return advance(
        record.deployment_id, devices_table=devices, deployments_table=deployments, delivery=delivery, now=now
    )
