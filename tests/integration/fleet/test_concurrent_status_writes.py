"""1,000 concurrent status reports on 100 devices through the real status-intake path, against
moto_server over HTTP: every device ends with the status of its newest report (no lost update).

Does moto_server serialize requests? No. `python -m moto.server` runs werkzeug with
threaded=True; its dispatcher lock only guards picking the service app, and moto's DynamoDB
backend evaluates a ConditionExpression and then stores the item without a lock. So two
concurrent conditional puts on one item can both pass the revision check, which DynamoDB
(which serializes writes per item) never allows. Here the server is the same moto application
behind one lock around each whole request (connections are still served by their own threads):
one request at a time, so each conditional write is atomic, as in DynamoDB, while the 1,000
writes still race each other between their read and their conditional write (that race is what
the code under test must win, and it takes no lock).
EDGELOOP_CONCURRENCY_THREADED_MOTO=1 runs the same test against moto's own threaded server.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from edgeloop.cloud.aws import client, reset_clients
from edgeloop.cloud.fleet.deployments import DeploymentTable
from edgeloop.cloud.fleet.devices import DeviceTable, microseconds
from edgeloop.functions.status_intake.logic import Outcome, handle_status_report
from edgeloop.local.aws import local_aws_environment, table_definition
from edgeloop.local.moto_server import MotoServer, server_environment
from edgeloop.schemas import (
    Architecture,
    DeviceRecord,
    DeviceStatus,
    IotRuleEvent,
    ModelStatusReport,
    Precision,
    names,
)

DEVICES = 100
WRITES_PER_DEVICE = 10
WORKERS = 10  # botocore's default connection pool size
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DEVICE_TABLE = "concurrency-devices"
DEPLOYMENT_TABLE = "concurrency-deployments"
STATUSES = (DeviceStatus.APPLIED, DeviceStatus.REJECTED, DeviceStatus.ROLLED_BACK, DeviceStatus.PENDING)

_SERIAL_SERVER = """
import sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
moto_app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()
def serialized(environ, start_response):
    with one_at_a_time:
        return list(moto_app(environ, start_response))
run_simple(sys.argv[1], int(sys.argv[2]), serialized, threaded=True)
"""


class SerialMotoServer(MotoServer):
    """moto's server application, answering one request at a time."""

    def _spawn(self, port: int) -> subprocess.Popen:
        command = [sys.executable, "-c", _SERIAL_SERVER, self.host, str(port)]
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=server_environment(),
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def moto_endpoint():
    threaded = os.environ.get("EDGELOOP_CONCURRENCY_THREADED_MOTO") == "1"
    with MotoServer() if threaded else SerialMotoServer() as server:
        yield server.endpoint_url


@pytest.fixture
def tables(moto_endpoint, monkeypatch):
    for variable, value in local_aws_environment(moto_endpoint).items():
        monkeypatch.setenv(variable, value)
    reset_clients()
    dynamodb = client("dynamodb")
    for table_name, keys in ((DEVICE_TABLE, names.DEVICE_TABLE_KEYS), (DEPLOYMENT_TABLE, names.DEPLOYMENT_TABLE_KEYS)):
        dynamodb.create_table(**table_definition(table_name, keys))
    yield DeviceTable(DEVICE_TABLE), DeploymentTable(DEPLOYMENT_TABLE)
    for table_name in (DEVICE_TABLE, DEPLOYMENT_TABLE):
        dynamodb.delete_table(TableName=table_name)
    reset_clients()


class _NoDelivery:
    def deliver(self, deployment_id, wave, update) -> None:
        raise AssertionError("no rollout is involved, nothing may be delivered")


def _device(thing: str) -> DeviceRecord:
    return DeviceRecord(
        thing_name=thing,
        site="plant-a",
        line_id="line-1",
        use_case="extrusion",
        architecture=Architecture.X86_64,
        runtime_version="1.2.0",
        supported_precisions=[Precision.FP32],
        status=DeviceStatus.PENDING,
        status_since=NOW,
        last_seen=NOW,
    )


def _reports(rng: random.Random) -> list[ModelStatusReport]:
    """Per device, WRITES_PER_DEVICE reports with distinct sent_at (some a microsecond apart)."""
    reports = []
    for d in range(DEVICES):
        offsets = rng.sample(range(1, 5_000_000), WRITES_PER_DEVICE)
        for k, offset in enumerate(offsets):
            reports.append(
                ModelStatusReport(
                    thing_name=f"gw-{d:03d}",
                    deployment_id="",  # no rollout: intake only records (advance() is tested elsewhere)
                    model_id="extrusion-line-1",
                    version=f"2.{k}.0",
                    status=rng.choice(STATUSES),
                    reason=f"write {d}/{k}",
                    sent_at=NOW + timedelta(microseconds=offset),
                )
            )
    return reports


def test_a_thousand_concurrent_status_writes_lose_no_update(tables):
    devices, deployments = tables
    for d in range(DEVICES):
        devices.put(_device(f"gw-{d:03d}"))
    rng = random.Random(7)
    reports = _reports(rng)
    # Reports of 4 devices at a time, shuffled together: with 10 workers about 2-3 race on one item
    # at any moment (read-then-write conflicts are common), not 1,000 writes spread thinly.
    per_group = 4 * WRITES_PER_DEVICE
    sequence = []
    for start in range(0, len(reports), per_group):
        group = reports[start : start + per_group]
        rng.shuffle(group)
        sequence += group

    def write(report: ModelStatusReport):
        event = IotRuleEvent.from_message(
            names.model_status_topic(report.thing_name), report.model_dump_json().encode(), int(NOW.timestamp() * 1000)
        )
        return handle_status_report(event, devices=devices, deployments=deployments, delivery=_NoDelivery(), now=NOW)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(write, sequence))

    outcomes = Counter(r.outcome for r in results)
    assert outcomes[Outcome.REFUSED] == 0, [r.refused for r in results if r.outcome is Outcome.REFUSED][:3]
    assert outcomes[Outcome.RECORDED] + outcomes[Outcome.STALE] == DEVICES * WRITES_PER_DEVICE
    assert outcomes[Outcome.STALE] > 0  # reports did arrive out of order
    newest = {}
    for report in reports:
        if report.thing_name not in newest or report.sent_at > newest[report.thing_name].sent_at:
            newest[report.thing_name] = report
    recorded = Counter(r.record.thing_name for r in results if r.outcome is Outcome.RECORDED)
    for thing, report in sorted(newest.items()):
        stored = devices.get_stored(thing)
        record = stored.record
        assert (record.status, record.reason) == (report.status, report.reason), thing
        assert stored.report_sent_at_us == microseconds(report.sent_at), thing
        if report.status is DeviceStatus.APPLIED:
            assert record.current_model_version == report.version, thing
        # One revision per recorded write (plus the seed): no write was silently overwritten.
        assert stored.revision == 1 + recorded[thing], thing
