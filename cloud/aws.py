"""Lazily built, cached AWS clients: nothing connects at import time (cold start stays cheap).

boto3 reads AWS_ENDPOINT_URL itself, so the same code talks to AWS or to the local moto_server.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"})


@cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_CONFIG)


@cache
def resource(service: str) -> Any:
    return boto3.session.Session().resource(service, config=_CONFIG)


def reset_clients() -> None:
    """Forget cached clients (tests and the local runtime call this after changing the endpoint)."""
    client.cache_clear()
    resource.cache_clear()
