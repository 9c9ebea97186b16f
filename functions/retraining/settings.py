"""Environment of the retraining function: the use case (EDGELOOP_USE_CASE or EDGELOOP_USE_CASE_FILE, as
the data-path functions read it), EDGELOOP_MONITORING_TABLE, EDGELOOP_EVENT_BUS (default "default") and
EDGELOOP_LINE_IDS, the comma-separated lines the schedule covers (empty: degraded events only)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from edgeloop.cloud.settings import UseCaseSettings, WithEventBus, WithMonitoringTable
from edgeloop.schemas import names
from edgeloop.schemas.common import IDENTIFIER


class Settings(UseCaseSettings, WithEventBus, WithMonitoringTable):
    line_ids_text: str = Field(default="", validation_alias=names.LINE_IDS_ENV)

    @model_validator(mode="after")
    def _line_ids(self) -> Self:
        bad = [line for line in self.line_ids if not IDENTIFIER.match(line)]
        if bad:
            raise ValueError(
                f"{names.LINE_IDS_ENV}={self.line_ids_text!r}: {bad} are not line ids ({IDENTIFIER.pattern})"
            )
        return self

    @property
    def line_ids(self) -> list[str]:
        return [line.strip() for line in self.line_ids_text.split(",") if line.strip()]
