"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE (default extrusion),
EDGELOOP_LATENESS_SLA_DAYS (default 14: rows ingested later than this after their event time go to late/)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field, ValidationError

from edgeloop.functions.common.settings import DataPathSettings, _describe
from edgeloop.schemas import names

_ENV_VARS = (names.DATA_BUCKET_ENV, names.USE_CASE_ENV, names.LATENESS_SLA_DAYS_ENV)


class Settings(DataPathSettings):
    lateness_sla_days: int = Field(
        default=names.DEFAULT_LATENESS_SLA_DAYS, gt=0, validation_alias=names.LATENESS_SLA_DAYS_ENV
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        # The shared from_env only picks up the bucket and use case variables, so list ours too.
        environ = os.environ if environ is None else environ
        values = {k: v for k, v in environ.items() if k in _ENV_VARS and v}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(_describe(e) for e in exc.errors())
            raise ValueError(f"invalid environment for {cls.__name__}: {problems}") from exc
