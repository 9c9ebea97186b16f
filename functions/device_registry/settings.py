"""Environment of this function: EDGELOOP_DEVICE_TABLE (required)."""

from __future__ import annotations

from pydantic import Field

from edgeloop.cloud.settings import EnvSettings
from edgeloop.schemas import names


class Settings(EnvSettings):
    device_table: str = Field(validation_alias=names.DEVICE_TABLE_ENV, min_length=3, max_length=255)
