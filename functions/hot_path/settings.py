"""Environment of this function: EDGELOOP_DATA_BUCKET, EDGELOOP_TIMESTREAM_DATABASE and
EDGELOOP_TIMESTREAM_TABLE (all required; the stack sets them only when Timestream is enabled)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeloop.functions.common.settings import _describe
from edgeloop.schemas import names

_ENV_VARS = (names.DATA_BUCKET_ENV, names.TIMESTREAM_DATABASE_ENV, names.TIMESTREAM_TABLE_ENV)
# Timestream database and table names: 3-256 characters of letters, digits, '_', '-' and '.'.
_TIMESTREAM_NAME = r"^[a-zA-Z0-9_.-]{3,256}$"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    data_bucket: str = Field(validation_alias=names.DATA_BUCKET_ENV, min_length=3, max_length=63)
    database: str = Field(validation_alias=names.TIMESTREAM_DATABASE_ENV, pattern=_TIMESTREAM_NAME)
    table: str = Field(validation_alias=names.TIMESTREAM_TABLE_ENV, pattern=_TIMESTREAM_NAME)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values = {k: v for k, v in environ.items() if k in _ENV_VARS and v}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(_describe(e) for e in exc.errors())
            raise ValueError(f"invalid environment for hot_path {cls.__name__}: {problems}") from exc
