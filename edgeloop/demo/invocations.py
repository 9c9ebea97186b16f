"""The demo calls the Lambda handlers in this process, as the IoT rules, EventBridge and Lambda would."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import redirect_stdout
from datetime import UTC, datetime
from typing import TextIO

# Like in Lambda, the handlers' EMF metrics go to a log (CloudWatch's stand-in is lambda.log in
# the work dir) and only their warnings reach the console.
QUIET_LAMBDA_ENV = {"POWERTOOLS_LOG_LEVEL": "WARNING"}

# redirect_stdout swaps the process-wide sys.stdout, so invocations take turns (one at a time,
# like a function with reserved concurrency 1; it also keeps moto's conditional writes honest).
_INVOCATION_LOCK = threading.Lock()


def logging_to(log: TextIO, handler: Callable) -> Callable:
    def invoke(event: dict, context: object) -> object:
        with _INVOCATION_LOCK, redirect_stdout(log):
            return handler(event, context)

    return invoke


def bridge_handlers(log: TextIO) -> dict[str, Callable]:
    """The functions behind the IoT rules, for the local bridge."""
    from edgeloop.functions.context.handler import lambda_handler as context_intake
    from edgeloop.functions.device_registry.handler import lambda_handler as register_device
    from edgeloop.functions.ingest.handler import lambda_handler as ingest
    from edgeloop.functions.status_intake.handler import lambda_handler as status_intake

    handlers = {
        "ingest": ingest,
        "device_registry": register_device,
        "status_intake": status_intake,
        "context": context_intake,
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
