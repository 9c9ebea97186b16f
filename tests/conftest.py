"""Shared fixtures: every test runs with fake credentials and never reaches AWS."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "edgeloop-test")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "edgeloop-test")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")


@pytest.fixture(autouse=True)
def _fresh_aws_clients():
    from edgeloop.functions.common.aws import reset_clients

    reset_clients()
    yield
    reset_clients()
