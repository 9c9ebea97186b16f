"""Fixtures of the fleet tests: moto with the device and deployment tables created, and the
rollout functions' handlers run in-process."""

from __future__ import annotations

import functools
import threading

import pytest
from fleet_helpers import DEPLOYMENT_TABLE, DEVICE_TABLE, ROLLOUT_ENVIRONMENT, RecordingDelivery, create_fleet_tables
from moto import mock_aws
from moto.dynamodb.models.table import Table

from edgeloop.cloud.fleet import rollout_context
from edgeloop.cloud.fleet.deployments import DeploymentTable
from edgeloop.cloud.fleet.devices import DeviceTable
from edgeloop.functions.orchestrator import handler as orchestrator_handler
from edgeloop.functions.status_intake import handler as status_intake_handler
from edgeloop.functions.wave_controller import handler as wave_controller_handler

_WRITE_LOCK = threading.RLock()


def _atomic(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _WRITE_LOCK:
            return method(*args, **kwargs)

    return locked


@pytest.fixture
def aws(monkeypatch):
    # DynamoDB evaluates a write's condition and applies the write atomically; moto checks and
    # then stores without a lock, so threads can both pass one revision check. The lock restores
    # the service's guarantee, which is what the concurrency tests rely on.
    for name in ("put_item", "update_item", "delete_item"):
        if hasattr(Table, name):
            monkeypatch.setattr(Table, name, _atomic(getattr(Table, name)))
    with mock_aws():
        yield


@pytest.fixture
def devices(aws) -> DeviceTable:
    create_fleet_tables()
    return DeviceTable(DEVICE_TABLE)


@pytest.fixture
def deployments(devices) -> DeploymentTable:
    return DeploymentTable(DEPLOYMENT_TABLE)


@pytest.fixture
def handler_delivery(devices, monkeypatch):
    """The rollout functions' handlers against the test tables: their environment set, their cached
    settings cleared before and after. Call it with the RecordingDelivery their delivery from
    settings should be (default: a new one); it returns that delivery."""
    for variable, value in ROLLOUT_ENVIRONMENT.items():
        monkeypatch.setenv(variable, value)
    handlers = (orchestrator_handler, status_intake_handler, wave_controller_handler)
    for handler in handlers:
        handler._settings.cache_clear()

    def deliver_through(delivery: RecordingDelivery | None = None) -> RecordingDelivery:
        delivery = delivery or RecordingDelivery()
        monkeypatch.setattr(rollout_context, "delivery_from_settings", lambda settings: delivery)
        return delivery

    yield deliver_through
    for handler in handlers:
        handler._settings.cache_clear()
