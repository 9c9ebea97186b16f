"""A stand-in Lambda context for callers that invoke handlers as plain functions.

The embedded local runtime and tests call `lambda_handler(event, None)`; powertools' Logger
needs a context's attributes, so handlers substitute this one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LocalLambdaContext:
    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:000000000000:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def context_or_local(context: object | None, function_name: str) -> object:
    return context if context is not None else LocalLambdaContext(function_name=f"edgeloop-{function_name}")
