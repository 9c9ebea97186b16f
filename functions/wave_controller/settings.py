"""Environment of the wave controller: the orchestrator's (tables, model bucket, delivery) plus
EDGELOOP_OFFLINE_SILENCE_S (default 900: a device silent 15 min is OFFLINE) and
EDGELOOP_WAVE_TIMEOUT_S (default 900: a wave that heard no report that long times out)."""

from __future__ import annotations

from pydantic import Field

from edgeloop.cloud.fleet.rollout_settings import RolloutSettings
from edgeloop.cloud.fleet.waves import DEFAULT_WAVE_TIMEOUT_S
from edgeloop.functions.device_registry.logic import DEFAULT_OFFLINE_SILENCE_S
from edgeloop.schemas import names


class Settings(RolloutSettings):
    offline_silence_s: float = Field(
        default=DEFAULT_OFFLINE_SILENCE_S, gt=0, validation_alias=names.OFFLINE_SILENCE_S_ENV
    )
    wave_timeout_s: float = Field(default=DEFAULT_WAVE_TIMEOUT_S, gt=0, validation_alias=names.WAVE_TIMEOUT_S_ENV)
