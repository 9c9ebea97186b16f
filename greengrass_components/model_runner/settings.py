"""The ModelRunner component's settings: the environment its recipe's setEnv sets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from edgeloop.model_runtime.signing import parse_public_key
from edgeloop.schemas import names
from edgeloop.schemas.common import Identifier, SemVer, ThingName, validation_problems

STATE_DIR_NAME = "model"


class RunnerSettings(BaseModel):
    """The component's environment (see the recipe's setEnv)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thing_name: ThingName
    work_dir: Path
    line_id: Identifier
    use_case: Identifier
    # Optional: the recipe's empty default means "accept unsigned payloads" / "skip the runtime check".
    model_signing_public_key: str | None = None
    runtime_version: SemVer | None = None
    status_interval_s: float = Field(default=names.DEFAULT_STATUS_INTERVAL_S, gt=0, allow_inf_nan=False)
    alert_raise_after: int = Field(default=names.DEFAULT_ALERT_RAISE_AFTER, ge=1)
    alert_clear_after: int = Field(default=names.DEFAULT_ALERT_CLEAR_AFTER, ge=1)
    # bounded like the Gateway's flushMaxLatencySeconds (FlushPolicy.max_latency_s)
    prediction_flush_max_latency_s: float = Field(
        default=names.DEFAULT_PREDICTION_FLUSH_MAX_LATENCY_S, ge=0, le=24 * 3600, allow_inf_nan=False
    )

    @field_validator("model_signing_public_key", mode="before")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is None or not str(value).strip():
            return None
        parse_public_key(str(value), field=names.MODEL_SIGNING_PUBLIC_KEY_CONFIG_KEY)
        return str(value).strip()

    @field_validator("runtime_version", mode="before")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value if value else None

    @field_validator(
        "status_interval_s", "alert_raise_after", "alert_clear_after", "prediction_flush_max_latency_s", mode="before"
    )
    @classmethod
    def _blank_is_default(cls, value: object, info: ValidationInfo) -> object:
        return cls.model_fields[info.field_name].default if value is None or not str(value).strip() else value

    @property
    def state_dir(self) -> Path:
        return self.work_dir / STATE_DIR_NAME


_SETTINGS_ENV = {
    "thing_name": names.THING_NAME_ENV,
    "work_dir": names.WORK_DIR_ENV,
    "line_id": names.LINE_ID_ENV,
    "use_case": names.USE_CASE_ENV,
}
_OPTIONAL_SETTINGS_ENV = {
    "model_signing_public_key": names.MODEL_SIGNING_PUBLIC_KEY_ENV,
    "runtime_version": names.RUNTIME_VERSION_ENV,
    "status_interval_s": names.STATUS_INTERVAL_S_ENV,
    "alert_raise_after": names.ALERT_RAISE_AFTER_ENV,
    "alert_clear_after": names.ALERT_CLEAR_AFTER_ENV,
    "prediction_flush_max_latency_s": names.PREDICTION_FLUSH_MAX_LATENCY_S_ENV,
}


def settings_from_env(environ: Mapping[str, str] | None = None) -> RunnerSettings:
    environ = os.environ if environ is None else environ
    missing = [var for var in _SETTINGS_ENV.values() if not environ.get(var)]
    if missing:
        raise ValueError(f"environment variables {missing} are not set (the ModelRunner recipe's setEnv sets them)")
    fields = {field: environ[var] for field, var in _SETTINGS_ENV.items()}
    fields.update({field: environ.get(var) for field, var in _OPTIONAL_SETTINGS_ENV.items()})
    all_env = {**_SETTINGS_ENV, **_OPTIONAL_SETTINGS_ENV}
    try:
        return RunnerSettings(**fields)
    except ValidationError as exc:
        problems = validation_problems(exc, name_of=lambda field: all_env.get(field, field))
        raise ValueError(f"invalid ModelRunner environment: {problems}") from None
