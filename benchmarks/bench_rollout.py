"""Rollout cost at fleet scale: plan + start a rollout and take one status write per device,
against a moto_server this benchmark starts, for 1k and then 10k registered devices.

Devices mix architectures (x86_64, aarch64, armv7l), runtimes (1.0.0-1.2.0) and four lines, so the
plan excludes some and splits the rest into an fp32 and an fp16-leaves cohort. Devices are seeded
with BatchWriteItem (registration itself is one announcement at a time, so that is not timed).
Timed per size: start_rollout (registry lookup, manifest from S3, a scan of the device table, the
plan, the deployment record, every target marked PENDING by compare-and-swap, wave 0 delivered
through LocalDelivery with a publisher that only counts), then one status report per target
through the whole status-intake path (handle_status_report: the device's conditional write, the
count in its wave's counter, and advance() when the counts say the wave is complete, which
delivers each next wave and ends the rollout SUCCEEDED). A report reads the counter of the
device's wave, which carries the wave's size and threshold, and neither the deployment record
(which lists every target) nor the wave's devices unless the counts say the wave may be done. `status.dynamodb_calls_per_report_*` is the mean number of DynamoDB calls per report
(constant when wave control is O(1) per report) and `status.wave_reads_*` the number of reports
that read a whole wave (one per wave, normally). Then the fleet query by model version
(by_model_version GSI) at the large size, median of repeats: the whole listing
(`status.query_ms_*`, every device on the version, which moto_server serializes attribute by
attribute) and one page of the HTTP API's listing (`status.query_page_ms_*`, 100 devices).

`rollout.scaling_ratio_10k_vs_1k` is the per-device cost at 10k over that at 1k: ~1.0 is linear.
EDGELOOP_BENCH_ROLLOUT_SIZES=small,large (default 1000,10000) picks the sizes; the figure names
follow them (1k, 10k, or the plain number), so a quick run never poses as the full one.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import boto3

from edgeloop.cloud.aws import client, reset_clients
from edgeloop.cloud.fleet.deployments import DeploymentTable
from edgeloop.cloud.fleet.devices import DeviceTable, record_to_item
from edgeloop.cloud.fleet.queries import fleet_status_page
from edgeloop.functions.orchestrator.logic import start_rollout
from edgeloop.functions.status_intake.logic import Outcome, handle_status_report
from edgeloop.local.aws import local_aws_environment, recorded_calls, table_definition
from edgeloop.local.delivery import LocalDelivery
from edgeloop.local.moto_server import MotoServer
from edgeloop.schemas import (
    Architecture,
    CompatibilityTier,
    DeploymentState,
    DeviceRecord,
    DeviceStatus,
    IotRuleEvent,
    ModelManifest,
    ModelMetrics,
    ModelStatusReport,
    Precision,
    feature_schema_hash,
    names,
)

SIZES_ENV = "EDGELOOP_BENCH_ROLLOUT_SIZES"
DEFAULT_SIZES = (1_000, 10_000)
QUERY_REPEATS = 5
QUERY_PAGE = 100
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LINES = ("line-1", "line-2", "line-3", "line-4")
ARCHITECTURES = tuple(Architecture)
RUNTIMES = ("1.0.0", "1.1.0", "1.2.0")
FEATURES = ["speed__mean", "temp_die__mean", "cold_od__last"]
MODEL_ID, NEW_VERSION = "extrusion-fleet", "2.0.0"
_BATCH_WRITE_LIMIT = 25


def run() -> dict[str, tuple[float, str]]:
    small, large = _sizes()
    results: dict[str, tuple[float, str]] = {}
    with MotoServer() as moto, _pointed_at(moto.endpoint_url):
        manifest_uri = _store_manifest()
        package_arn = _register_package(manifest_uri)
        per_device = {}
        for size in (small, large):
            devices, deployments = _fresh_tables(size)
            _seed(devices, size)
            timed = _timed_rollout(devices, deployments, package_arn)
            per_device[size] = timed.elapsed_s / size * 1000
            results[f"rollout.per_device_ms_{_label(size)}"] = (per_device[size], "ms/device")
            results[f"rollout.targets_{_label(size)}"] = (float(timed.targets), "devices")
            results[f"status.dynamodb_calls_per_report_{_label(size)}"] = (
                timed.report_calls / timed.targets,
                "calls/report",
            )
            results[f"status.wave_reads_{_label(size)}"] = (float(timed.wave_reads), "reports")
        results[f"rollout.scaling_ratio_{_label(large)}_vs_{_label(small)}"] = (
            per_device[large] / per_device[small],
            "ratio",
        )
        results[f"status.query_ms_{_label(large)}"] = (_query_ms(devices), "ms")
        results[f"status.query_page_ms_{_label(large)}"] = (_page_ms(devices), "ms")
    return results


def _sizes() -> tuple[int, int]:
    raw = os.environ.get(SIZES_ENV)
    if not raw:
        return DEFAULT_SIZES
    try:
        small, large = (int(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(f"{SIZES_ENV}={raw!r} is not two comma-separated device counts") from None
    if not 0 < small < large:
        raise ValueError(f"{SIZES_ENV}={raw!r}: need 0 < small < large")
    return small, large


def _label(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


@contextmanager
def _pointed_at(endpoint_url: str):
    saved = dict(os.environ)
    os.environ.update(local_aws_environment(endpoint_url))
    reset_clients()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_clients()


def _store_manifest() -> str:
    s3 = client("s3")
    s3.create_bucket(Bucket=names.LOCAL_MODEL_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    key = f"{names.MODELS_PREFIX}/{MODEL_ID}/{NEW_VERSION}/manifest.json"
    s3.put_object(Bucket=names.LOCAL_MODEL_BUCKET, Key=key, Body=_manifest().model_dump_json().encode())
    return f"s3://{names.LOCAL_MODEL_BUCKET}/{key}"


def _manifest() -> ModelManifest:
    def tier(precision: Precision, architectures: list[Architecture], min_runtime: str) -> CompatibilityTier:
        return CompatibilityTier(
            precision=precision,
            architectures=architectures,
            min_runtime_version=min_runtime,
            payload_key=f"{names.MODELS_PREFIX}/{MODEL_ID}/{NEW_VERSION}/{precision.value}.npz",
            payload_bytes=77_000,
            sha256="ab" * 32,
            max_abs_error=0.0,
        )

    return ModelManifest(
        model_id=MODEL_ID,
        version=NEW_VERSION,
        use_case="extrusion",
        line_ids=list(LINES[:3]),  # line-4's devices are excluded: not targeted
        family="xgboost",
        target="cold_od",
        features=FEATURES,
        feature_schema_hash=feature_schema_hash(FEATURES),
        tiers=[
            tier(Precision.FP32, [Architecture.X86_64, Architecture.AARCH64], "1.0.0"),
            tier(Precision.FP16_LEAVES, [Architecture.ARMV7L], "1.1.0"),
        ],
        training_start=NOW - timedelta(days=7),
        training_end=NOW - timedelta(days=1),
        training_data_sha256="c" * 64,
        metrics=ModelMetrics(mse=0.01, mae=0.05, n_train=1000, n_test=200),
        created_at=NOW - timedelta(hours=1),
    )


def _register_package(manifest_uri: str) -> str:
    sagemaker = boto3.client("sagemaker")
    group = names.model_package_group_name("extrusion", "fleet")
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    package = sagemaker.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/xgboost:latest"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        CustomerMetadataProperties={names.MANIFEST_URI_METADATA_KEY: manifest_uri},
    )
    return package["ModelPackageArn"]


def _fresh_tables(size: int) -> tuple[DeviceTable, DeploymentTable]:
    dynamodb = client("dynamodb")
    tables = (
        (f"bench-devices-{size}", names.DEVICE_TABLE_KEYS),
        (f"bench-deployments-{size}", names.DEPLOYMENT_TABLE_KEYS),
    )
    for table_name, keys in tables:
        dynamodb.create_table(**table_definition(table_name, keys))
    return DeviceTable(tables[0][0]), DeploymentTable(tables[1][0])


def _seed(devices: DeviceTable, size: int) -> None:
    items = [{"PutRequest": {"Item": record_to_item(_device(i), revision=1)}} for i in range(size)]
    dynamodb = client("dynamodb")
    for start in range(0, len(items), _BATCH_WRITE_LIMIT):
        request = {devices.table_name: items[start : start + _BATCH_WRITE_LIMIT]}
        while request:
            request = dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}


def _device(i: int) -> DeviceRecord:
    architecture = ARCHITECTURES[i % len(ARCHITECTURES)]
    return DeviceRecord(
        thing_name=f"plant-{i % 2}-gateway-{i:05d}",
        site=f"plant-{i % 2}",
        line_id=LINES[(i // 3) % len(LINES)],
        use_case="extrusion",
        architecture=architecture,
        runtime_version=RUNTIMES[(i // 12) % len(RUNTIMES)],
        supported_precisions=[Precision.FP16_LEAVES] if architecture is Architecture.ARMV7L else [Precision.FP32],
        current_model_id=MODEL_ID,
        current_model_version="1.0.0",
        status=DeviceStatus.APPLIED,
        status_since=NOW - timedelta(days=1),
        last_seen=NOW - timedelta(minutes=1),
    )


@dataclass(frozen=True)
class TimedRollout:
    elapsed_s: float
    targets: int
    report_calls: int  # DynamoDB calls made while taking the status reports
    wave_reads: int  # reports during which advance() read a whole wave (BatchGetItem)


def _timed_rollout(devices: DeviceTable, deployments: DeploymentTable, package_arn: str) -> TimedRollout:
    published = []
    delivery = LocalDelivery(lambda topic, payload: published.append(topic))
    event = {
        "detail-type": names.MODEL_PACKAGE_STATE_CHANGE,
        "detail": {"ModelPackageArn": package_arn, "ModelApprovalStatus": "Approved"},
    }
    started = time.perf_counter()
    record = start_rollout(
        event,
        devices=devices,
        deployments=deployments,
        delivery=delivery,
        model_bucket=names.LOCAL_MODEL_BUCKET,
        now=NOW,
    )
    report_calls = wave_reads = 0
    # In wave order: a wave's devices report once it has been delivered (the previous one completed).
    for n, thing in enumerate(record.targets):
        with recorded_calls("dynamodb") as calls:
            intake = handle_status_report(
                _report_event(record.deployment_id, thing, NOW + timedelta(seconds=1, microseconds=n)),
                devices=devices,
                deployments=deployments,
                delivery=delivery,
                now=NOW + timedelta(seconds=2),
            )
        if intake.outcome is not Outcome.RECORDED:
            raise RuntimeError(f"status report of {thing} was not recorded: {intake.outcome} {intake.refused}")
        report_calls += len(calls)
        wave_reads += "BatchGetItem" in calls
    elapsed = time.perf_counter() - started
    if not published or len(record.targets) == 0:
        raise RuntimeError(f"rollout {record.deployment_id} delivered nothing: {record.reason}")
    final = deployments.get(record.deployment_id)
    if final.state is not DeploymentState.SUCCEEDED:
        raise RuntimeError(f"rollout {record.deployment_id} ended {final.state.value}, not succeeded: {final.reason}")
    return TimedRollout(elapsed, len(record.targets), report_calls, wave_reads)


def _report_event(deployment_id: str, thing: str, sent_at: datetime) -> IotRuleEvent:
    report = ModelStatusReport(
        thing_name=thing,
        deployment_id=deployment_id,
        model_id=MODEL_ID,
        version=NEW_VERSION,
        status=DeviceStatus.APPLIED,
        sent_at=sent_at,
    )
    received_ms = int((sent_at + timedelta(seconds=1)).timestamp() * 1000)
    return IotRuleEvent.from_message(names.model_status_topic(thing), report.model_dump_json().encode(), received_ms)


def _query_ms(devices: DeviceTable) -> float:
    timings = []
    for _ in range(QUERY_REPEATS):
        started = time.perf_counter()
        found = devices.by_model_version(NEW_VERSION)
        timings.append((time.perf_counter() - started) * 1000)
    if not found:
        raise RuntimeError(f"no device of {devices.table_name} runs {NEW_VERSION}: the status writes were lost")
    return statistics.median(timings)


def _page_ms(devices: DeviceTable) -> float:
    timings = []
    for _ in range(QUERY_REPEATS):
        started = time.perf_counter()
        page = fleet_status_page(devices, model_version=NEW_VERSION, limit=QUERY_PAGE)
        timings.append((time.perf_counter() - started) * 1000)
        if len(page.devices) != QUERY_PAGE:
            raise RuntimeError(f"a page of {QUERY_PAGE} devices on {NEW_VERSION} held {len(page.devices)}")
    return statistics.median(timings)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
