"""Environment of the functions, validated once per cold start.

Each field names its environment variable as its validation alias; `from_env` reads exactly those
variables, and a bad or missing one is reported by variable name and value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from edgeloop.schemas import names
from edgeloop.schemas.common import Identifier, validation_problems
from edgeloop.schemas.use_case import UseCaseConfig, UseCaseError, resolve_use_case


@contextmanager
def temporary_environment(overrides: Mapping[str, str], unset: Iterable[str] = ()) -> Iterator[None]:
    """Set (and unset) environment variables for a block, then restore each one as it was."""
    unset = tuple(unset)
    saved = {key: os.environ.get(key) for key in (*overrides, *unset)}
    for key in unset:
        os.environ.pop(key, None)
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
            errors = exc.errors()
            if all(not error["loc"] for error in errors):  # a model validator's own message names its variables
                problems = "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in errors)
            else:
                problems = validation_problems(exc, root="<settings>", missing="is not set")
            raise ValueError(f"invalid environment for {cls.__name__}: {problems}") from exc


class UseCaseSettings(EnvSettings):
    """The use case a function serves: EDGELOOP_USE_CASE_FILE (a file the stack packages with the code)
    or EDGELOOP_USE_CASE (a packaged use case); with both, the file's use_case must be that name. Neither
    set fails here: there is no default use case. The file is read and validated here, once per cold start."""

    use_case: Identifier | None = Field(default=None, validation_alias=names.USE_CASE_ENV)
    use_case_file: str | None = Field(default=None, validation_alias=names.USE_CASE_FILE_ENV)
    _use_case_config: UseCaseConfig = PrivateAttr()

    @model_validator(mode="after")
    def _resolve_use_case(self) -> Self:
        if self.use_case is None and self.use_case_file is None:
            raise ValueError(
                f"neither {names.USE_CASE_ENV} nor {names.USE_CASE_FILE_ENV} is set: set one (no default use case)"
            )
        try:
            self._use_case_config = resolve_use_case(
                self.use_case,
                self.use_case_file,
                environ={},
                name_source=names.USE_CASE_ENV,
                file_source=names.USE_CASE_FILE_ENV,
            )
        except UseCaseError as exc:
            raise ValueError(str(exc)) from None
        # the name, also when only the file was given (frozen: set once, here, like a field default)
        object.__setattr__(self, "use_case", self._use_case_config.use_case)
        return self

    @property
    def use_case_config(self) -> UseCaseConfig:
        """The use case this function serves (resolved and validated with the settings)."""
        return self._use_case_config


class DataPathSettings(UseCaseSettings):
    """What every data-path function needs: the data bucket and the use case it serves."""

    data_bucket: str = Field(validation_alias=names.DATA_BUCKET_ENV, min_length=3, max_length=63)


# The patterns of botocore's models: events NonPartnerEventBusNameOrArn, dynamodb TableName.
EVENT_BUS_PATTERN = r"^(arn:aws[\w-]*:events:[a-z]+-[a-z]+-[\w-]+:[0-9]{12}:event-bus\/)?[\.\-_A-Za-z0-9]+$"
TABLE_NAME_PATTERN = r"^[a-zA-Z0-9_.-]+$"


class WithEventBus(EnvSettings):
    """Functions that put edgeloop events (names.EVENT_SOURCE) on a bus: its name or ARN."""

    event_bus: str = Field(
        default="default", validation_alias=names.EVENT_BUS_ENV, max_length=1600, pattern=EVENT_BUS_PATTERN
    )


class WithMonitoringTable(EnvSettings):
    """Functions that keep per-line items in the monitoring table (alert notices, retraining starts)."""

    monitoring_table: str = Field(
        validation_alias=names.MONITORING_TABLE_ENV, min_length=3, max_length=255, pattern=TABLE_NAME_PATTERN
    )


class LatenessSettings(DataPathSettings):
    """Functions that enforce the lateness SLA (ingest refuses, compaction diverts to late/)."""

    lateness_sla_days: int = Field(
        default=names.DEFAULT_LATENESS_SLA_DAYS, gt=0, validation_alias=names.LATENESS_SLA_DAYS_ENV
    )
