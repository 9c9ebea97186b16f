"""Powertools Logger, Tracer and Metrics for one function, configured the same way everywhere."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer

from edgeloop.schemas import names


def powertools(service: str) -> tuple[Logger, Tracer, Metrics]:
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", names.PROJECT)
    return Logger(service=service), Tracer(service=service), Metrics(namespace=namespace, service=service)
