"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE or
EDGELOOP_USE_CASE_FILE (one of them required: see edgeloop.cloud.settings.DataPathSettings).

The settings also carry the IoT registry's line directory, built once with them per warm container.
"""

from __future__ import annotations

from edgeloop.cloud.line_directory import WithLineDirectory
from edgeloop.cloud.settings import DataPathSettings


class Settings(DataPathSettings, WithLineDirectory):
    pass
