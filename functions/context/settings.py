"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE (default extrusion).

The settings also carry the IoT registry's line directory, built once with them per warm container.
"""

from __future__ import annotations

from edgeloop.cloud.line_directory import WithLineDirectory
from edgeloop.cloud.settings import DataPathSettings


class Settings(DataPathSettings, WithLineDirectory):
    pass
