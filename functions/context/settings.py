"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE (default extrusion)."""

from __future__ import annotations

from edgeloop.cloud.settings import DataPathSettings


class Settings(DataPathSettings):
    pass
