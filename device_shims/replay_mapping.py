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
context:                        # optional: runs, spec limits and machine states (recording_context.py)
  runs: {column: product}       # a new run when the value changes; omit: one run per file
  limits: {setpoint: od_setpoint, band: 0.05}   # or fixed: [l, u], run_median: true + band,
                                # or columns: {lower: od_min, upper: od_max}
  states:
    default: running
    rules: [{when: "screw_rpm < 1", state: idle}]   # first match wins
    changeover_min: 10          # the first 10 minutes after a run change
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
from edgeloop.schemas.live_context import check_limit_sources

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


# --- the context block ----------------------------------------------------------------------------
DEFAULT_STATE_NAMES = ("running", "idle", "down", "changeover")
CHANGEOVER = "changeover"
DEFAULT_MIN_STATE_S = 60.0
OPERATORS = ("<=", ">=", "==", "!=", "<", ">")
_CONDITION = re.compile(r"^\s*(?:`(?P<quoted>[^`]+)`|(?P<plain>[^`]+?))\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>.+?)\s*$")


class Condition(_Strict):
    """`<file column> <op> <value>`: a number, or text for == and != (an empty cell matches nothing)."""

    column: str = Field(min_length=1)
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float | str

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = _CONDITION.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"{text!r} is not `<column> <op> <value>` with op one of {list(OPERATORS)} "
                "(wrap a column name holding spaces or operators in backticks: `Speed [m/min]` < 5)"
            )
        column = (match["quoted"] or match["plain"]).strip()
        raw = match["value"].strip()
        try:
            value: float | str = float(raw)
        except ValueError:
            value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" else raw
            if match["op"] not in ("==", "!="):
                raise ValueError(f"{text!r}: {match['op']} needs a number, got {raw!r}") from None
        return cls(column=column, op=match["op"], value=value)

    def text(self) -> str:
        value = self.value if isinstance(self.value, str) else f"{self.value:g}"
        return f"{self.column} {self.op} {value}"


class StateRule(_Strict):
    when: list[Condition] = Field(min_length=1, description="a condition, or a list of them that must all hold")
    state: str = Field(min_length=1)

    @field_validator("when", mode="before")
    @classmethod
    def _conditions(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        return [Condition.parse(item) if not isinstance(item, (dict, Condition)) else item for item in items]


class StatesContext(_Strict):
    """Machine states from rules on the file's columns: the first rule that matches a row wins."""

    default: str = Field(default="running", min_length=1, description="the state when no rule matches")
    rules: list[StateRule] = Field(default_factory=list)
    changeover_min: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="minutes of changeover after each run change"
    )
    min_duration_s: float = Field(
        default=DEFAULT_MIN_STATE_S,
        ge=0,
        allow_inf_nan=False,
        description="a spell shorter than this merges into the state before it",
    )
    names: list[str] = Field(default=list(DEFAULT_STATE_NAMES), min_length=1, description="the states rules may name")

    @model_validator(mode="after")
    def _known_states(self) -> StatesContext:
        known = set(self.names)
        if self.default not in known:
            raise ValueError(f"default={self.default!r} is not among names {self.names}")
        for n, rule in enumerate(self.rules):
            if rule.state not in known:
                raise ValueError(f"rules[{n}].state={rule.state!r} is not among names {self.names} (a typo?)")
        if self.changeover_min is not None and CHANGEOVER not in known:
            raise ValueError(f"changeover_min={self.changeover_min} needs {CHANGEOVER!r} among names {self.names}")
        return self


SpecPair = tuple[float, float]


class LimitColumns(_Strict):
    lower: str = Field(min_length=1, description="the file column holding the lower limit")
    upper: str = Field(min_length=1, description="the file column holding the upper limit")


class LimitsContext(_Strict):
    """Spec limits of the use case's target metric: fixed, setpoint ± band, run median ± band, or
    read from a lower and an upper limit column."""

    fixed: SpecPair | dict[str, SpecPair] | None = Field(
        default=None, description="[lower, upper] for every run, or per run value"
    )
    setpoint: str | None = Field(default=None, min_length=1, description="the file column holding the setpoint")
    run_median: bool = Field(default=False, description="the run's median of the target over its productive rows")
    columns: LimitColumns | None = Field(default=None, description="limits recorded in two columns of the file")
    band: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="± absolute, in the target's unit")
    relative_band: float | None = Field(
        default=None, gt=0, lt=1, allow_inf_nan=False, description="± a fraction of the centre (0.02 = ±2 %)"
    )

    @field_validator("fixed")
    @classmethod
    def _ordered(cls, value: SpecPair | dict[str, SpecPair] | None) -> Any:
        pairs = {"": value} if isinstance(value, tuple) else (value or {})
        for run, (lower, upper) in pairs.items():
            if not lower < upper:
                where = f"[{run!r}]" if run else ""
                raise ValueError(f"fixed{where}=[{lower}, {upper}]: lower must be below upper")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> LimitsContext:
        check_limit_sources(
            {"fixed": self.fixed, "setpoint": self.setpoint, "run_median": self.run_median, "columns": self.columns},
            {"band": self.band, "relative_band": self.relative_band},
            {
                "fixed": "fixed: [lower, upper]",
                "setpoint": "setpoint: <column> + band",
                "run_median": "run_median: true + band",
                "columns": "columns: {lower: <column>, upper: <column>}",
            },
            ("setpoint", "run_median"),
        )
        return self


class RunsContext(_Strict):
    """Runs: from a product/recipe column (a new run when the value changes), or one per file."""

    column: str | None = Field(default=None, min_length=1)
    value: str | None = Field(default=None, min_length=1, description="the per-file run's value (default: file stem)")

    @model_validator(mode="after")
    def _one(self) -> RunsContext:
        if self.column is not None and self.value is not None:
            raise ValueError(
                f"value={self.value!r} names the per-file run; with column={self.column!r} runs take its values"
            )
        return self


class ContextMapping(_Strict):
    runs: RunsContext = Field(default_factory=RunsContext)
    limits: LimitsContext | None = None
    states: StatesContext | None = None

    def columns(self) -> dict[str, str]:
        """The file columns the block reads -> `key=value` of the setting that names each (for errors)."""
        used: dict[str, str] = {}
        if self.runs.column:
            used.setdefault(self.runs.column, f"context.runs.column={self.runs.column!r}")
        if self.limits is not None and self.limits.setpoint:
            used.setdefault(self.limits.setpoint, f"context.limits.setpoint={self.limits.setpoint!r}")
        if self.limits is not None and self.limits.columns is not None:
            for side in ("lower", "upper"):
                column = getattr(self.limits.columns, side)
                used.setdefault(column, f"context.limits.columns.{side}={column!r}")
        if self.states is not None:
            for n, rule in enumerate(self.states.rules):
                for condition in rule.when:
                    used.setdefault(condition.column, f"context.states.rules[{n}].when={condition.text()!r}")
        return used


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
    context: ContextMapping | None = None

    @model_validator(mode="after")
    def _layout_complete(self) -> ReplayMapping:
        if self.layout == "wide":
            if not self.columns:
                raise ValueError("layout='wide' needs `columns` (file column -> metric)")
            if self.long is not None:
                raise ValueError("layout='wide' takes no `long` section")
            if self.timestamp.column in self.columns:
                raise ValueError(f"timestamp.column={self.timestamp.column!r} is also mapped as a metric column")
            if self.context is not None and self.timestamp.column in self.context.columns():
                raise ValueError(f"timestamp.column={self.timestamp.column!r} is also read by the context block")
        else:
            if self.long is None:
                raise ValueError("layout='long' needs `long: {metric_column, value_column}`")
            if self.columns:
                raise ValueError("layout='long' maps metric keys under long.metrics, not `columns`")
            used = [self.timestamp.column, self.long.metric_column, self.long.value_column]
            if len(set(used)) != 3:
                raise ValueError(f"timestamp.column, long.metric_column and long.value_column must differ, got {used}")
            if self.context is not None:
                raise ValueError("a `context` block needs layout='wide' (it reads columns of the file)")
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
