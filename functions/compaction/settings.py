"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE or
EDGELOOP_USE_CASE_FILE (one of them required: see edgeloop.cloud.settings.DataPathSettings),
EDGELOOP_LATENESS_SLA_DAYS (default 14: rows ingested later than this after their event time go to late/)."""

from __future__ import annotations

from edgeloop.cloud.settings import LatenessSettings


class Settings(LatenessSettings):
    pass
