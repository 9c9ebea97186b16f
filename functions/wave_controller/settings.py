"""Environment of the wave controller: the orchestrator's (tables, model bucket, delivery) and the
rollout policy, whose offline silence and wave timeout it applies (see edgeloop.cloud.fleet.rollout_settings)."""

from __future__ import annotations

from edgeloop.cloud.fleet.rollout_settings import RolloutSettings


class Settings(RolloutSettings):
    pass
