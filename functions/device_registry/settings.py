"""Environment of this function: EDGELOOP_DEVICE_TABLE (required).

`EnvSettings` is the base the fleet functions (registry, status intake, orchestrator) share: each
field names its environment variable as its validation alias, and a bad or missing one is
reported by variable name and value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeloop.schemas import names


class EnvSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        environ = os.environ if environ is None else environ
        variables = {field.validation_alias for field in cls.model_fields.values() if field.validation_alias}
        values = {key: value for key, value in environ.items() if key in variables and value}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(_describe(error) for error in exc.errors())
            raise ValueError(f"invalid environment for {cls.__name__}: {problems}") from exc


def _describe(error: dict) -> str:
    variable = ".".join(map(str, error["loc"])) or "<settings>"
    if error["type"] == "missing":
        return f"{variable} is not set"
    return f"{variable}={error.get('input')!r}: {error['msg']}"


class Settings(EnvSettings):
    device_table: str = Field(validation_alias=names.DEVICE_TABLE_ENV, min_length=3, max_length=255)
