"""Shared fixtures: every test runs with fake credentials and never reaches AWS."""

from __future__ import annotations

import os
import sys

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
    from edgeloop.cloud.aws import reset_clients

    reset_clients()
    yield
    reset_clients()


@pytest.fixture(autouse=True)
def _fresh_handler_caches():
    """Handlers cache their settings and line directory per warm container; a test is a new one."""
    _clear_handler_caches()
    yield
    _clear_handler_caches()


def _clear_handler_caches() -> None:
    for name, module in list(sys.modules.items()):
        if name.startswith("edgeloop.functions.") and name.endswith(".handler"):
            for value in vars(module).values():
                if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", None) == name:
                    value.cache_clear()
