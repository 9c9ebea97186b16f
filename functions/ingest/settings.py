"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE or
EDGELOOP_USE_CASE_FILE (one of them required: see edgeloop.cloud.settings.DataPathSettings),
EDGELOOP_LATENESS_SLA_DAYS (default 14: samples whose event time is older than this on arrival are
refused into quarantine).

The settings also carry the IoT registry's line directory, built once with them per warm container.
"""

from __future__ import annotations

from edgeloop.cloud.line_directory import WithLineDirectory
from edgeloop.cloud.settings import LatenessSettings


class Settings(LatenessSettings, WithLineDirectory):
    pass
