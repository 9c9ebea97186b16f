"""Powertools Logger, Tracer and Metrics for one function, configured the same way everywhere."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics

from edgeloop.schemas import names

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer


def logger_and_metrics(service: str) -> tuple[Logger, Metrics]:
    """For a function that does without the X-Ray SDK's subsegments: ingest, invoked once per
    gateway message, where the SDK's import is a fifth of the cold start. The function's active
    tracing still records every invocation's segment (init, invocation, errors)."""
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", names.PROJECT)
    return Logger(service=service), Metrics(namespace=namespace, service=service)


def powertools(service: str) -> tuple[Logger, Tracer, Metrics]:
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 (only the traced functions load the X-Ray SDK)

    logger, metrics = logger_and_metrics(service)
    return logger, Tracer(service=service), metrics
