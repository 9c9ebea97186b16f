"""The replay mapping file (YAML, `ReplayMapping`): how to read a recording and where its series go.

layout: wide                    # one column per metric; or `long` (metric, time, value columns)
timestamp:
  column: time
  format: "%Y-%m-%d %H:%M:%S"   # epoch_s | epoch_ms | iso8601 | a strftime format
  timezone: Europe/Brussels     # for values without a UTC offset (default UTC)
columns:                        # wide: file column -> metric (a string) or {metric, role}
  line_speed: speed
  die_temp: {role: die_temperature}   # the use case's key for that role on the line
speed: 0                        # 0 = as fast as possible, 1 = real time, N = N x real time
line_id: line-1                 # optional: the recording's line (default: the gateway's)
thing_name: gw-1                # optional: must be the gateway's own thing
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeloop.greengrass_components.gateway.config import load_model_file
from edgeloop.schemas import UseCaseConfig
from edgeloop.schemas.common import Identifier, ThingName

EPOCH_S = "epoch_s"
EPOCH_MS = "epoch_ms"
ISO8601 = "iso8601"
NAMED_TIME_FORMATS = (EPOCH_S, EPOCH_MS, ISO8601)
# Names the whole mapping in a validation error that concerns no single field.
MAPPING_ROOT = "<mapping>"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeriesMapping(_Strict):
    """Where one series goes: a metric key, a taxonomy role (the use case picks the key), or both."""

    metric: str | None = Field(default=None, min_length=1)
    role: Identifier | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"metric": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _something(self) -> SeriesMapping:
        if self.metric is None and self.role is None:
            raise ValueError("needs a metric, a role, or both")
        return self


class TimestampMapping(_Strict):
    column: str = Field(min_length=1)
    format: str = Field(default=EPOCH_MS, description="epoch_s, epoch_ms, iso8601 or a strftime format")
    timezone: str = Field(default="UTC", description="zone of values without a UTC offset")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in NAMED_TIME_FORMATS and not re.search(r"%[a-zA-Z]", value):
            raise ValueError(
                f"format={value!r} is none of {list(NAMED_TIME_FORMATS)} and has no strftime directive (%Y, %m, ...)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone={value!r} is not an IANA time zone (e.g. UTC, Europe/Brussels)") from None
        return value


class LongLayout(_Strict):
    metric_column: str = Field(min_length=1)
    value_column: str = Field(min_length=1)
    metrics: dict[str, SeriesMapping] = Field(default_factory=dict, description="metric key in the file -> metric")


class ReplayMapping(_Strict):
    layout: Literal["wide", "long"] = "wide"
    timestamp: TimestampMapping
    columns: dict[str, SeriesMapping] = Field(default_factory=dict, description="wide: file column -> metric")
    long: LongLayout | None = None
    speed: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="0 = as fast as possible, N = N x real time"
    )
    line_id: Identifier | None = None
    thing_name: ThingName | None = None

    @model_validator(mode="after")
    def _layout_complete(self) -> ReplayMapping:
        if self.layout == "wide":
            if not self.columns:
                raise ValueError("layout='wide' needs `columns` (file column -> metric)")
            if self.long is not None:
                raise ValueError("layout='wide' takes no `long` section")
            if self.timestamp.column in self.columns:
                raise ValueError(f"timestamp.column={self.timestamp.column!r} is also mapped as a metric column")
        else:
            if self.long is None:
                raise ValueError("layout='long' needs `long: {metric_column, value_column}`")
            if self.columns:
                raise ValueError("layout='long' maps metric keys under long.metrics, not `columns`")
            used = [self.timestamp.column, self.long.metric_column, self.long.value_column]
            if len(set(used)) != 3:
                raise ValueError(f"timestamp.column, long.metric_column and long.value_column must differ, got {used}")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayMapping:
        return load_model_file(cls, path, "replay mapping", _parse_yaml, root=MAPPING_ROOT)


def _parse_yaml(text: str) -> object:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {exc}") from None


def resolve_metric(entry: SeriesMapping, use_case: UseCaseConfig, line_id: str, where: str) -> str:
    """The metric key an entry names, checked against the use case's metrics and taxonomy on the line."""
    roles = use_case.roles_for_line(line_id)
    if entry.metric is None:
        try:
            return use_case.key_for_role(line_id, entry.role)
        except KeyError:
            known = sorted({r.role for r in roles.values()})
            raise ValueError(
                f"{where}.role={entry.role!r}: no metric of use case {use_case.use_case!r} "
                f"carries it on line {line_id!r} (roles: {known})"
            ) from None
    if entry.metric not in use_case.accepted_metrics:
        raise ValueError(
            f"{where}.metric={entry.metric!r} is not a metric of use case {use_case.use_case!r} "
            f"({sorted(use_case.accepted_metrics)})"
        )
    if entry.role is not None:
        actual = roles.get(entry.metric)
        if actual is None or actual.role != entry.role:
            carried = actual.role if actual else None
            raise ValueError(
                f"{where}.role={entry.role!r}: metric {entry.metric!r} carries role {carried!r} on line {line_id!r}"
            )
    return entry.metric
