"""The stack's settings, read from CDK context (cdk.json, or `cdk synth -c key=value`).

| context key                           | default     | meaning                                         |
|---------------------------------------|-------------|-------------------------------------------------|
| edgeloop:useCase                      | extrusion   | use case the data-path functions serve          |
| edgeloop:enableTimestream             | false       | Timestream hot path: NOT IMPLEMENTED (see below) |
| edgeloop:gatewayComponentVersion      | 1.0.0       | com.edgeloop.Gateway version a rollout pins     |
| edgeloop:modelRunnerComponentVersion  | 1.0.0       | com.edgeloop.ModelRunner version a rollout pins |
| edgeloop:pandasLayerVersion           | see layers  | AWS SDK for pandas layer version in the region  |

Timestream for LiveAnalytics is closed to new customers (2025-06-20), so S3 is the system of
record and the Timestream hot path is not built yet; asking for it fails the synth instead of
silently deploying without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from edgeloop.schemas.common import Identifier, SemVer
from edgeloop.schemas.use_case import load_use_case

from .constructs.layers import PANDAS_LAYER_VERSION

USE_CASE_KEY = "edgeloop:useCase"
ENABLE_TIMESTREAM_KEY = "edgeloop:enableTimestream"
GATEWAY_VERSION_KEY = "edgeloop:gatewayComponentVersion"
MODEL_RUNNER_VERSION_KEY = "edgeloop:modelRunnerComponentVersion"
PANDAS_LAYER_VERSION_KEY = "edgeloop:pandasLayerVersion"

DEFAULT_USE_CASE = "extrusion"
DEFAULT_COMPONENT_VERSION = "1.0.0"

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


class ConfigError(ValueError):
    """A context value the stack cannot be built from (names the key and the value)."""


@dataclass(frozen=True)
class StackConfig:
    use_case: str = DEFAULT_USE_CASE
    gateway_component_version: str = DEFAULT_COMPONENT_VERSION
    model_runner_component_version: str = DEFAULT_COMPONENT_VERSION
    pandas_layer_version: int = PANDAS_LAYER_VERSION

    @classmethod
    def from_context(cls, get: Any) -> StackConfig:
        """`get` is `node.try_get_context`: context arrives as JSON values or, from -c, as strings."""
        if _flag(get(ENABLE_TIMESTREAM_KEY), ENABLE_TIMESTREAM_KEY):
            raise ConfigError(
                f"{ENABLE_TIMESTREAM_KEY}=true is not implemented yet: Timestream for LiveAnalytics is "
                "closed to new customers, so S3 is the system of record; set it to false"
            )
        use_case = _validated(Identifier, get(USE_CASE_KEY) or DEFAULT_USE_CASE, USE_CASE_KEY)
        try:
            load_use_case(use_case)
        except FileNotFoundError as exc:
            raise ConfigError(f"{USE_CASE_KEY}={use_case!r}: {exc}") from exc
        return cls(
            use_case=use_case,
            gateway_component_version=_validated(
                SemVer, get(GATEWAY_VERSION_KEY) or DEFAULT_COMPONENT_VERSION, GATEWAY_VERSION_KEY
            ),
            model_runner_component_version=_validated(
                SemVer, get(MODEL_RUNNER_VERSION_KEY) or DEFAULT_COMPONENT_VERSION, MODEL_RUNNER_VERSION_KEY
            ),
            pandas_layer_version=_positive_int(get(PANDAS_LAYER_VERSION_KEY), PANDAS_LAYER_VERSION_KEY),
        )


def _flag(value: Any, key: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{key}={value!r} is not a boolean (true/false)")


def _validated(annotation: Any, value: Any, key: str) -> str:
    try:
        return TypeAdapter(annotation).validate_python(str(value))
    except ValidationError as exc:
        raise ConfigError(f"{key}={value!r}: {exc.errors()[0]['msg']}") from exc


def _positive_int(value: Any, key: str) -> int:
    if value is None or value == "":
        return PANDAS_LAYER_VERSION
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not a whole number") from None
    if number < 1:
        raise ConfigError(f"{key}={value!r} must be at least 1")
    return number
