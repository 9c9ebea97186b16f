"""Environment of this function: EDGELOOP_DATA_BUCKET, EDGELOOP_TIMESTREAM_DATABASE and
EDGELOOP_TIMESTREAM_TABLE (all required; the stack sets them only when Timestream is enabled)."""

from __future__ import annotations

from pydantic import Field

from edgeloop.cloud.settings import EnvSettings
from edgeloop.schemas import names

# Timestream database and table names: 3-256 characters of letters, digits, '_', '-' and '.'.
_TIMESTREAM_NAME = r"^[a-zA-Z0-9_.-]{3,256}$"


class Settings(EnvSettings):
    data_bucket: str = Field(validation_alias=names.DATA_BUCKET_ENV, min_length=3, max_length=63)
    database: str = Field(validation_alias=names.TIMESTREAM_DATABASE_ENV, pattern=_TIMESTREAM_NAME)
    table: str = Field(validation_alias=names.TIMESTREAM_TABLE_ENV, pattern=_TIMESTREAM_NAME)
