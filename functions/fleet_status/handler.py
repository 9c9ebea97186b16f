"""The fleet API (API Gateway REST, IAM-authenticated): fleet status, device history, why-not.

GET /devices?site=&line=&model=&status=&limit=&next=
                                          -> {"devices": [DeviceRecord, ...], "next": thing | null}
   one page (limit: items read, default 500, at most 1000); pass `next` back for the following page
GET /devices/{thing}/history?limit=       -> {"thing_name": ..., "history": [DeviceHistoryEntry, ...]} newest first
GET /models/{version}/why-not?model_id=   -> WhyNotReport
A bad parameter value answers 400 naming the parameter and the value; an unknown device or model
version 404.
"""

from __future__ import annotations

import json
from functools import lru_cache

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from edgeloop.cloud.fleet.deployments import DeploymentTable
from edgeloop.cloud.fleet.devices import DeviceTable
from edgeloop.cloud.fleet.queries import (
    DEFAULT_PAGE,
    InvalidParameter,
    NotFound,
    device_history,
    fleet_status_page,
    why_not,
)
from edgeloop.cloud.lambda_context import context_or_local
from edgeloop.cloud.observability import powertools

from .settings import Settings

logger, tracer, metrics = powertools("fleet_status")
app = APIGatewayRestResolver()

DEVICE_FILTERS = ("site", "line", "model", "status")
PAGING = ("limit", "next")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings.from_env()


def _devices() -> DeviceTable:
    return DeviceTable(_settings().device_table)


def _query(allowed: tuple[str, ...]) -> dict[str, str]:
    """The request's query parameters; one the route does not take is refused by name."""
    params = dict(app.current_event.query_string_parameters or {})
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidParameter(
            unknown[0], params[unknown[0]], f"is not a parameter of this query (it takes {list(allowed)})"
        )
    return params


def _whole_number(parameter: str, raw: str | None, default: int | None) -> int | None:
    if raw is None:
        return default
    if not raw.isdigit():
        raise InvalidParameter(parameter, raw, "is not a whole number")
    return int(raw)


@app.get("/devices")
@tracer.capture_method
def get_devices() -> dict:
    params = _query(DEVICE_FILTERS + PAGING)
    page = fleet_status_page(
        _devices(),
        site=params.get("site"),
        line_id=params.get("line"),
        model_version=params.get("model"),
        status=params.get("status"),
        limit=_whole_number("limit", params.get("limit"), DEFAULT_PAGE),
        after=params.get("next"),
    )
    return page.model_dump(mode="json")


@app.get("/devices/<thing>/history")
@tracer.capture_method
def get_history(thing: str) -> dict:
    params = _query(("limit",))
    entries = device_history(_devices(), thing, limit=_whole_number("limit", params.get("limit"), None))
    return {"thing_name": thing, "history": [e.model_dump(mode="json") for e in entries]}


@app.get("/models/<version>/why-not")
@tracer.capture_method
def get_why_not(version: str) -> dict:
    params = _query(("model_id",))
    report = why_not(
        _devices(), DeploymentTable(_settings().deployment_table), version, model_id=params.get("model_id")
    )
    return report.model_dump(mode="json")


@app.exception_handler(InvalidParameter)
def _bad_parameter(exc: InvalidParameter) -> Response:
    metrics.add_metric(name="BadRequests", unit=MetricUnit.Count, value=1)
    body = {"error": str(exc), "parameter": exc.parameter, "value": str(exc.value)}
    return _json(400, body)


@app.exception_handler(NotFound)
def _not_found(exc: NotFound) -> Response:
    return _json(404, {"error": str(exc)})


def _json(status: int, body: dict) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


def lambda_handler(event: dict, context) -> dict:
    return _handle(event, context_or_local(context, "fleet_status"))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def _handle(event: dict, context) -> dict:
    return app.resolve(event, context)
