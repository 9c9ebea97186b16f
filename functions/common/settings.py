"""Environment of the data-path functions, validated once per cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeloop.schemas import names
from edgeloop.schemas.common import Identifier

DEFAULT_USE_CASE = "extrusion"


class DataPathSettings(BaseModel):
    """What every data-path function needs: the data bucket and the use case it serves."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    data_bucket: str = Field(validation_alias=names.DATA_BUCKET_ENV, min_length=3, max_length=63)
    use_case: Identifier = Field(default=DEFAULT_USE_CASE, validation_alias=names.USE_CASE_ENV)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        values = {k: v for k, v in environ.items() if k in (names.DATA_BUCKET_ENV, names.USE_CASE_ENV) and v}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(_describe(e) for e in exc.errors())
            raise ValueError(f"invalid environment for {cls.__name__}: {problems}") from exc


def _describe(error: dict) -> str:
    variable = ".".join(map(str, error["loc"]))
    if error["type"] == "missing":
        return f"{variable} is not set"
    return f"{variable}={error.get('input')!r}: {error['msg']}"
