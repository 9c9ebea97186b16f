"""Environment of the orchestrator: the rollout settings every rollout function shares."""

from __future__ import annotations

from edgeloop.cloud.fleet.rollout_settings import RolloutSettings


class Settings(RolloutSettings):
    pass
