"""The Lambda handlers as the local stack calls them: in this process, as IoT rules, EventBridge and Lambda would.

Like in Lambda, the handlers' output (EMF metrics, structured logs) goes to a log file (CloudWatch's
stand-in is `lambda.log` in the stack's folder) and only their warnings reach the console.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from contextlib import redirect_stdout
from datetime import UTC, datetime
from typing import Any, TextIO

from edgeloop.cloud.lambda_context import LocalLambdaContext
from edgeloop.schemas import names

QUIET_LAMBDA_ENV = {"POWERTOOLS_LOG_LEVEL": "WARNING"}

# redirect_stdout swaps the process-wide sys.stdout, so invocations take turns (one at a time,
# like a function with reserved concurrency 1; it also keeps moto's conditional writes honest).
_INVOCATION_LOCK = threading.Lock()


def logging_to(log: TextIO, handler: Callable) -> Callable:
    """`handler` writing to `log`, one invocation at a time; a failure's traceback goes to `log` too
    (as the Lambda runtime writes it to CloudWatch), then the exception propagates."""

    def invoke(event: dict, context: object) -> object:
        with _INVOCATION_LOCK, redirect_stdout(log):
            try:
                return handler(event, context)
            except Exception:
                name = getattr(context, "function_name", getattr(handler, "__module__", "handler"))
                print(f"[ERROR] {datetime.now(UTC).isoformat()} {name} failed:", file=log)
                traceback.print_exc(file=log)
                raise

    return invoke


def lambda_context(function: str) -> LocalLambdaContext:
    return LocalLambdaContext(function_name=f"{names.PROJECT}-{function}")


def bridge_handlers(log: TextIO) -> dict[str, Callable]:
    """The functions behind the IoT rules (names.IOT_ROUTES), for the local bridge."""
    from edgeloop.functions.context.handler import lambda_handler as context_intake
    from edgeloop.functions.device_registry.handler import lambda_handler as register_device
    from edgeloop.functions.ingest.handler import lambda_handler as ingest
    from edgeloop.functions.predictions.handler import lambda_handler as land_predictions
    from edgeloop.functions.status_intake.handler import lambda_handler as status_intake

    handlers = {
        "ingest": ingest,
        "device_registry": register_device,
        "status_intake": status_intake,
        "context": context_intake,
        "predictions": land_predictions,
    }
    return {name: logging_to(log, handler) for name, handler in handlers.items()}


def success_destination_event(context, request: dict, response: dict) -> dict:
    """What Lambda hands an on-success destination function (the stack's response_only=False)."""
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": context.aws_request_id,
            "functionArn": f"{context.invoked_function_arn}:$LATEST",
            "condition": "Success",
            "approximateInvokeCount": 1,
        },
        "requestPayload": request,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": response,
    }


def scheduled_event(source: str, at: datetime | None = None) -> dict[str, Any]:
    """An EventBridge schedule's event (its body is ignored by the scheduled functions, but for `time`,
    the schedule's moment, which live accuracy scores up to)."""
    at = at or datetime.now(UTC)
    time = at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"source": source, "detail-type": "Scheduled Event", "time": time, "detail": {}}


def compact_and_roll_up(log: TextIO, *, source: str = "edgeloop.local") -> dict:
    """Compaction, then the rollups of what it rewrote, handed over as its success destination would;
    returns compaction's result."""
    from edgeloop.functions.compaction.handler import lambda_handler as compaction
    from edgeloop.functions.rollups.handler import lambda_handler as rollups

    compaction_context = lambda_context("compaction")
    request = scheduled_event(source)
    result = logging_to(log, compaction)(request, compaction_context)
    logging_to(log, rollups)(success_destination_event(compaction_context, request, result), lambda_context("rollups"))
    return result


def pack_lines(log: TextIO, line_ids: list[str]) -> dict:
    """The metric packer for lines whose curated data changed (in AWS: curated/ "Object Created" events)."""
    from edgeloop.functions.metric_packer.handler import lambda_handler as metric_packer

    return logging_to(log, metric_packer)({"line_ids": list(line_ids)}, lambda_context("metric_packer"))


def wave_controller_round(log: TextIO, *, source: str = "edgeloop.local") -> dict:
    from edgeloop.functions.wave_controller.handler import lambda_handler as wave_controller

    return logging_to(log, wave_controller)(scheduled_event(source), lambda_context("wave_controller"))


def live_accuracy_round(log: TextIO, *, source: str = "edgeloop.local", at: datetime | None = None) -> dict:
    """One live-accuracy round as of `at` (default now): the schedule's event with its time."""
    from edgeloop.functions.live_accuracy.handler import lambda_handler as live_accuracy

    return logging_to(log, live_accuracy)(scheduled_event(source, at), lambda_context("live_accuracy"))


def orchestrate(log: TextIO, approval_event: dict) -> dict:
    """The orchestrator for one "SageMaker Model Package State Change" event (edgeloop.local.approval)."""
    from edgeloop.functions.orchestrator.handler import lambda_handler as orchestrator

    return logging_to(log, orchestrator)(approval_event, lambda_context("orchestrator"))
