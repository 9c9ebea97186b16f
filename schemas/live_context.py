"""Rules on the gateway's live metrics: machine states (`state_rules`) and context (`live_context`).

A gateway without an MES/PLC adapter publishing context intervals derives them from its own
signals, the way a replay mapping's `context` block derives them from a recording's columns, in
metric names (greengrass_components/model_runner/context_rules.py applies them):

live_context:
  runs: {metric: product_code}            # a new run when the value changes
  limits: {setpoint: od_setpoint, band: 0.05}   # or relative_band: 0.02, fixed: [l, u],
                                          # or metrics: {lower: od_min, upper: od_max}
  hold_samples: 3                         # a change counts once it held this many samples ...
  hold_s: 10                              # ... and this many seconds (a noisy setpoint must not flap)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pydantic import Field, field_validator, model_validator

from .common import Contract

# "<metric> <op> <number>", the conditions of a state rule (the mapping's context.states rules use the same form)
STATE_CONDITION = re.compile(r"^\s*(\S+?)\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class StateRule(Contract):
    """How the gateway tells a machine state from its live metrics: `state` while all of `when` hold."""

    when: list[str] = Field(
        min_length=1, description='conditions "<metric> <op> <number>" (op: < <= > >= == !=), all must hold'
    )
    state: str = Field(min_length=1, max_length=64)

    @field_validator("when", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("when")
    @classmethod
    def _parsable(cls, value: list[str]) -> list[str]:
        for condition in value:
            if not STATE_CONDITION.match(condition):
                raise ValueError(f'when={condition!r} is not "<metric> <op> <number>" with op one of < <= > >= == !=')
        return value

    def conditions(self) -> list[tuple[str, str, float]]:
        """(metric, op, value) per condition."""
        parsed = (STATE_CONDITION.match(condition) for condition in self.when)
        return [(m.group(1), m.group(2), float(m.group(3))) for m in parsed if m]


def check_limit_sources(
    given: Mapping[str, object], bands: Mapping[str, float | None], hints: Mapping[str, str], centred: Sequence[str]
) -> None:
    """One rule for a limits block (a replay mapping's and a use case's live_context): exactly one source;
    a centred source (setpoint, run median) takes exactly one of band / relative_band, the others none.

    given: source field -> its value (falsy: not given); hints: source field -> how to write it."""
    sources = [name for name, value in given.items() if value]
    set_bands = [name for name, value in bands.items() if value is not None]
    if len(sources) > 1:
        raise ValueError(f"give one of {', '.join(given)}; got {sources}")
    if not sources:
        if set_bands:
            name = set_bands[0]
            centres = " or ".join(hints[c] for c in centred)
            raise ValueError(f"{name}={bands[name]} needs a centre: {centres}")
        raise ValueError(f"give one of {', '.join(hints[name] for name in given)}")
    source = sources[0]
    if source not in centred:
        if set_bands:
            raise ValueError(f"{set_bands[0]}={bands[set_bands[0]]}: {source} limits take no band")
    elif len(set_bands) != 1:
        centre = given[source]
        shown = "true" if centre is True else repr(centre)
        raise ValueError(
            f"{source}={shown} needs exactly one of band (absolute) or relative_band (fraction), got {set_bands}"
        )


class LimitMetrics(Contract):
    lower: str = Field(min_length=1, description="the metric carrying the lower limit")
    upper: str = Field(min_length=1, description="the metric carrying the upper limit")


class LiveLimits(Contract):
    """Spec limits of the target in force: fixed, setpoint metric ± band (or relative band), or two limit metrics."""

    fixed: tuple[float, float] | None = Field(default=None, description="[lower, upper]")
    setpoint: str | None = Field(default=None, min_length=1, description="the metric carrying the setpoint")
    metrics: LimitMetrics | None = Field(default=None, description="limits carried by two metrics")
    band: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="± absolute, in the target's unit")
    relative_band: float | None = Field(
        default=None, gt=0, lt=1, allow_inf_nan=False, description="± a fraction of the setpoint (0.02 = ±2 %)"
    )
    tolerance: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="limits moving by at most this much have not changed"
    )

    @field_validator("fixed")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"fixed=[{value[0]}, {value[1]}]: lower must be below upper")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> LiveLimits:
        check_limit_sources(
            {"fixed": self.fixed, "setpoint": self.setpoint, "metrics": self.metrics},
            {"band": self.band, "relative_band": self.relative_band},
            {
                "fixed": "fixed: [lower, upper]",
                "setpoint": "setpoint: <metric> + band",
                "metrics": "metrics: {lower: <metric>, upper: <metric>}",
            },
            ("setpoint",),
        )
        return self

    def used_metrics(self) -> dict[str, str]:
        """Metric -> `field=value` naming the setting that reads it."""
        used = {self.setpoint: f"live_context.limits.setpoint={self.setpoint!r}"} if self.setpoint else {}
        if self.metrics is not None:
            used[self.metrics.lower] = f"live_context.limits.metrics.lower={self.metrics.lower!r}"
            used[self.metrics.upper] = f"live_context.limits.metrics.upper={self.metrics.upper!r}"
        return used


class LiveRuns(Contract):
    metric: str = Field(min_length=1, description="a new run starts when this metric's value changes")


class LiveContextConfig(Contract):
    """Runs and spec limits the gateway derives from its live metrics (context_rules.py)."""

    runs: LiveRuns | None = None
    limits: LiveLimits | None = None
    hold_samples: int = Field(default=1, ge=1, le=10_000, description="a change counts once this many samples held it")
    hold_s: float = Field(
        default=0.0, ge=0, le=86_400, allow_inf_nan=False, description="... and it held for this many seconds"
    )
    lease_s: float = Field(
        default=900.0,
        ge=60,
        le=86_400,
        allow_inf_nan=False,
        description="an open interval ends this long after the newest sample and is extended (and sent again) "
        "when half of that is left: the cloud sees the current run without a message per sample",
    )

    @model_validator(mode="after")
    def _something(self) -> LiveContextConfig:
        if self.runs is None and self.limits is None:
            raise ValueError("live_context needs runs: {metric: <metric>}, limits: {...}, or both")
        return self

    def used_metrics(self) -> dict[str, str]:
        used = {self.runs.metric: f"live_context.runs.metric={self.runs.metric!r}"} if self.runs else {}
        return {**used, **(self.limits.used_metrics() if self.limits else {})}

    def check(self, metrics: Sequence[str], target_metric: str) -> None:
        """Every metric it reads is a metric of the use case (and not the target: limits from the
        measured value would judge it against itself)."""
        for metric, setting in self.used_metrics().items():
            if metric not in metrics:
                raise ValueError(f"{setting} is not among metrics {list(metrics)}")
            if metric == target_metric:
                raise ValueError(f"{setting} is the target metric: limits or runs must come from another signal")
