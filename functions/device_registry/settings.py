"""Environment of this function: EDGELOOP_DEVICE_TABLE (required); enrollment (see
edgeloop.cloud.fleet.enrollment) with the rollout functions' environment: EDGELOOP_DEPLOYMENT_TABLE,
EDGELOOP_MODEL_BUCKET, EDGELOOP_DELIVERY and, for Greengrass, the component versions
(edgeloop.cloud.fleet.rollout_settings). Without EDGELOOP_DEPLOYMENT_TABLE the registry only registers.
EDGELOOP_DATA_BUCKET (optional): where refused messages are quarantined; without it they are logged."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Self

from pydantic import Field

from edgeloop.cloud.fleet.rollout_settings import RolloutSettings
from edgeloop.cloud.settings import EnvSettings
from edgeloop.schemas import names


class Settings(EnvSettings):
    device_table: str = Field(validation_alias=names.DEVICE_TABLE_ENV, min_length=3, max_length=255)
    # Where refused messages are quarantined; without it they are logged only.
    quarantine_bucket: str | None = Field(
        default=None, validation_alias=names.DATA_BUCKET_ENV, min_length=3, max_length=63
    )
    enrollment: RolloutSettings | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        environ = os.environ if environ is None else environ
        settings = super().from_env(environ)
        if not environ.get(names.DEPLOYMENT_TABLE_ENV):
            return settings
        return settings.model_copy(update={"enrollment": RolloutSettings.from_env(environ)})
