"""Environment of the functions, validated once per cold start.

Each field names its environment variable as its validation alias; `from_env` reads exactly those
variables, and a bad or missing one is reported by variable name and value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeloop.schemas import names
from edgeloop.schemas.common import Identifier, validation_problems


@contextmanager
def temporary_environment(overrides: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for a block, then restore each one as it was (unset ones unset)."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class EnvSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Every field from its environment variable; unset or empty ones take their default."""
        environ = os.environ if environ is None else environ
        variables = {f.validation_alias for f in cls.model_fields.values() if isinstance(f.validation_alias, str)}
        values = {key: value for key, value in environ.items() if key in variables and value}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = validation_problems(exc, root="<settings>", missing="is not set")
            raise ValueError(f"invalid environment for {cls.__name__}: {problems}") from exc


class DataPathSettings(EnvSettings):
    """What every data-path function needs: the data bucket and the use case it serves."""

    data_bucket: str = Field(validation_alias=names.DATA_BUCKET_ENV, min_length=3, max_length=63)
    use_case: Identifier = Field(default=names.DEFAULT_USE_CASE, validation_alias=names.USE_CASE_ENV)


class LatenessSettings(DataPathSettings):
    """Functions that enforce the lateness SLA (ingest refuses, compaction diverts to late/)."""

    lateness_sla_days: int = Field(
        default=names.DEFAULT_LATENESS_SLA_DAYS, gt=0, validation_alias=names.LATENESS_SLA_DAYS_ENV
    )
