"""Fixtures of the fleet tests: moto with the device and deployment tables created."""

from __future__ import annotations

import functools
import threading

import pytest
from fleet_helpers import DEPLOYMENT_TABLE, DEVICE_TABLE, create_fleet_tables
from moto import mock_aws
from moto.dynamodb.models.table import Table

from edgeloop.cloud.fleet.deployments import DeploymentTable
from edgeloop.cloud.fleet.devices import DeviceTable

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
