"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE or
EDGELOOP_USE_CASE_FILE (one of them required: see edgeloop.cloud.settings.DataPathSettings)."""

from __future__ import annotations

from edgeloop.cloud.settings import DataPathSettings


class Settings(DataPathSettings):
    pass
