"""Environment of this function: the orchestrator's (it advances rollouts and may deliver a wave).

EDGELOOP_DEVICE_TABLE, EDGELOOP_DEPLOYMENT_TABLE, EDGELOOP_MODEL_BUCKET, EDGELOOP_DELIVERY, for
Greengrass the component versions, and the rollout policy: see edgeloop.cloud.fleet.rollout_settings.
"""

from __future__ import annotations

from edgeloop.cloud.fleet.rollout_settings import RolloutSettings


class Settings(RolloutSettings):
    pass
