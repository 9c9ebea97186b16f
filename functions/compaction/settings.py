"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE (default extrusion),
EDGELOOP_LATENESS_SLA_DAYS (default 14: rows ingested later than this after their event time go to late/)."""

from __future__ import annotations

from edgeloop.cloud.settings import LatenessSettings


class Settings(LatenessSettings):
    pass
