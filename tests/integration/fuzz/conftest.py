"""The cloud the fuzz suite runs the real handlers against: moto, in-process, with the data bucket,
the gateway in the IoT registry (its line), the device and deployment tables holding the gateway,
and a Timestream table, and every handler's environment set."""

from __future__ import annotations

import pytest
from fuzz_cloud import ENVIRONMENT, create_cloud
from moto import mock_aws

from edgeloop.cloud.aws import reset_clients
from edgeloop.functions.context import handler as context_handler
from edgeloop.functions.device_registry import handler as registry_handler
from edgeloop.functions.hot_path import handler as hot_path_handler
from edgeloop.functions.ingest import handler as ingest_handler
from edgeloop.functions.status_intake import handler as status_handler


@pytest.fixture(autouse=True)
def _fresh_aws_clients():
    """One warm container per module (the parent conftest's fresh clients per test cost ~2 s each):
    the handlers keep their clients and settings, as a warm Lambda does, against one moto cloud."""
    yield


@pytest.fixture(autouse=True)
def _fresh_handler_caches():
    yield


@pytest.fixture(scope="module")
def cloud():
    """moto with everything the five handlers read or write, shared by a module's tests (they use
    fresh ids); yields the S3 client."""
    with pytest.MonkeyPatch.context() as monkeypatch, mock_aws():
        for variable, value in ENVIRONMENT.items():
            monkeypatch.setenv(variable, value)
        _clear_clients_and_handler_caches()
        yield create_cloud()
        _clear_clients_and_handler_caches()


def _clear_clients_and_handler_caches() -> None:
    """A cold start: no client or settings of another test's environment."""
    reset_clients()
    for handler in (context_handler, hot_path_handler, ingest_handler, registry_handler, status_handler):
        handler._settings.cache_clear()
