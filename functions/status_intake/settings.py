"""Environment of this function: the orchestrator's (it advances rollouts and may deliver a wave).

EDGELOOP_DEVICE_TABLE, EDGELOOP_DEPLOYMENT_TABLE, EDGELOOP_MODEL_BUCKET, EDGELOOP_DELIVERY, for
Greengrass the component versions, and the rollout policy: see edgeloop.cloud.fleet.rollout_settings.
EDGELOOP_DATA_BUCKET (optional): where refused messages are quarantined; without it they are logged.
"""

from __future__ import annotations

from pydantic import Field

from edgeloop.cloud.fleet.rollout_settings import RolloutSettings
from edgeloop.schemas import names


class Settings(RolloutSettings):
    quarantine_bucket: str | None = Field(
        default=None, validation_alias=names.DATA_BUCKET_ENV, min_length=3, max_length=63
    )
