"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE or
EDGELOOP_USE_CASE_FILE (one of them required: see edgeloop.cloud.settings.DataPathSettings),
EDGELOOP_LANDING_DELAY_MINUTES (required: the stack's compaction interval and the gateways' flush, the
longest a measurement takes to reach curated/), EDGELOOP_EVENT_BUS (default "default": where the
MODEL_DEGRADED_DETAIL_TYPE events go)."""

from __future__ import annotations

from pydantic import Field

from edgeloop.cloud.settings import DataPathSettings, WithEventBus
from edgeloop.schemas import names


class Settings(DataPathSettings, WithEventBus):
    landing_delay_minutes: float = Field(
        validation_alias=names.LANDING_DELAY_MINUTES_ENV, ge=0, le=24 * 60, allow_inf_nan=False
    )
