"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE (default extrusion),
EDGELOOP_LATENESS_SLA_DAYS (default 14: samples whose event time is older than this on arrival are
refused into quarantine)."""

from __future__ import annotations

from edgeloop.cloud.settings import LatenessSettings


class Settings(LatenessSettings):
    pass
