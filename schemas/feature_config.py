"""Features a process engineer would add to the per-metric statistics, declared in the use case.

`UseCaseConfig.features` declares them; `model_runtime.features.pack_features` computes them (cloud
packer and gateway alike) after the `<metric>__<stat>` columns, in `extra_feature_names` order.
Every parameter a feature depends on is part of its name, so the feature schema hash (over the
names) changes whenever a parameter does and a device never scores a payload built on other ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from pydantic import Field

from .common import Contract

TransportOutput = Literal["transit_change", "at_label"]
TRANSPORT_OUTPUTS: tuple[str, ...] = get_args(TransportOutput)  # the order of a transport's features


class StepFeature(Contract):
    """Seconds since a metric (e.g. a setpoint) last moved by more than `min_step` between samples."""

    metric: str = Field(description="metric key, or a role of the shared taxonomy")
    min_step: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="a move of at most this is no step")


class TransportFeature(Contract):
    """A target that sees the upstream metric `delay` seconds late: delay = distance / rate.

    rate = the rate metric's short mean at the pack end, in distance units per `rate_period_s`
    seconds (extrusion: 700 m of cooling line at a speed in m/min: distance 700, rate_period_s 60).
    """

    upstream: str = Field(description="metric key (or taxonomy role) the target follows with a delay")
    rate_metric: str = Field(description="metric key (or taxonomy role) of the transport rate (line or screw speed)")
    distance: float = Field(gt=0, allow_inf_nan=False, description="transport length in the rate's distance unit")
    rate_period_s: float = Field(
        default=1.0, gt=0, allow_inf_nan=False, description="the rate counts distance per this many seconds"
    )
    outputs: list[TransportOutput] = Field(
        default=list(TRANSPORT_OUTPUTS),
        min_length=1,
        description="transit_change suits a delay shorter than the horizon (the change on its way), at_label "
        "one longer (what the target will see is already upstream, in the pack)",
    )


class FeatureConfig(Contract):
    """Extra features; the default adds none (a use case without this block keeps its features and hash).

    Names (<metric>__...): mean_<w>s and slope_<w>s (per second) over the last w seconds; ewm_<h>s
    (exponentially weighted mean, half-life h s); change_<lag>s_of_mean_<level>s (mean over the last
    `level_s` minus that mean lag seconds earlier); since_step_over_<min_step> (seconds, at most the
    pack length); for transport, `<upstream>__transit_change_<distance>_over_<rate>_per_<p>s_of_mean_<level>s`
    (upstream now minus upstream one delay ago: the change on its way to the target; NaN when that is
    before the pack) and `..._at_label_...` (the upstream mean that reaches the target at the middle of
    the label window, taken at the pack end when that moment is later).
    """

    metrics: list[str] | None = Field(
        default=None,
        min_length=1,
        description="metric keys (or roles of the shared taxonomy) that get windows, EWMs and changes; "
        "None: every metric",
    )
    windows_s: list[int] = Field(default_factory=list, description="mean and slope over the last w seconds")
    ewm_halflife_s: list[float] = Field(default_factory=list, description="EWM half-lives in seconds")
    changes_s: list[int] = Field(default_factory=list, description="lags of the change features in seconds")
    level_s: int = Field(default=10, gt=0, description="span of the short mean used by changes and transport")
    steps: list[StepFeature] = Field(default_factory=list)
    transport: list[TransportFeature] = Field(default_factory=list)

    def check(self, metrics: Sequence[str], roles: Mapping[str, str], sample_period_s: float, pack_s: int) -> None:
        """Raise ValueError naming the field and value that the use case cannot compute.

        roles: taxonomy role -> metric key (shared taxonomy)."""
        steps = _Steps(sample_period_s, pack_s)
        for name in self.metrics or []:
            _key(f"features.metrics entry {name!r}", name, metrics, roles)
        for field in ("metrics", "windows_s", "ewm_halflife_s", "changes_s"):
            values = getattr(self, field) or []
            if len(set(values)) != len(values):
                raise ValueError(f"features.{field}={values} repeats a value")
        for window in self.windows_s:
            steps.whole(f"features.windows_s entry {window}", window, minimum=2)
        for halflife in self.ewm_halflife_s:
            if not 0 < halflife < float("inf"):
                raise ValueError(f"features.ewm_halflife_s entry {halflife} must be a positive number of seconds")
        if self.changes_s or self.transport:  # the only users of the short mean
            steps.whole(f"features.level_s={self.level_s}", self.level_s, minimum=1)
        for lag in self.changes_s:
            steps.whole(f"features.changes_s entry {lag}", lag, minimum=1)
            if lag + self.level_s > pack_s:
                raise ValueError(
                    f"features.changes_s entry {lag}: lag + level_s ({self.level_s}) = {lag + self.level_s} s "
                    f"exceeds pack_window_s={pack_s}"
                )
        for number, step in enumerate(self.steps):
            _key(f"features.steps[{number}].metric={step.metric!r}", step.metric, metrics, roles)
        for number, transport in enumerate(self.transport):
            if len(set(transport.outputs)) != len(transport.outputs):
                raise ValueError(f"features.transport[{number}].outputs={transport.outputs} repeats a value")
            for field in ("upstream", "rate_metric"):
                value = getattr(transport, field)
                _key(f"features.transport[{number}].{field}={value!r}", value, metrics, roles)
        names = extra_feature_names(self.resolved(metrics, roles))
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"features declare {repeated} more than once (steps or transport entries that repeat)")

    def resolved(self, metrics: Sequence[str], roles: Mapping[str, str]) -> FeatureConfig:
        """The same features with metric keys for roles, and `metrics` in the use case's order."""

        def key(name: str) -> str:
            return _key(name, name, metrics, roles)

        chosen = set(metrics) if self.metrics is None else {key(name) for name in self.metrics}
        return self.model_copy(
            update={
                "metrics": [metric for metric in metrics if metric in chosen],
                "steps": [s.model_copy(update={"metric": key(s.metric)}) for s in self.steps],
                "transport": [
                    t.model_copy(update={"upstream": key(t.upstream), "rate_metric": key(t.rate_metric)})
                    for t in self.transport
                ],
            }
        )

    @property
    def per_metric(self) -> bool:
        return bool(self.windows_s or self.ewm_halflife_s or self.changes_s)


def extra_feature_names(resolved: FeatureConfig) -> list[str]:
    """Names of the extra features of a resolved config, in the order pack_features returns them:
    per metric (use-case order) windows (mean, slope), EWMs, changes; then steps; then transport."""
    level = f"of_mean_{resolved.level_s}s"
    per_metric = [
        *(stat for w in resolved.windows_s for stat in (f"mean_{w}s", f"slope_{w}s")),
        *(f"ewm_{number_text(h)}s" for h in resolved.ewm_halflife_s),
        *(f"change_{lag}s_{level}" for lag in resolved.changes_s),
    ]
    names = [f"{metric}__{stat}" for metric in resolved.metrics or [] for stat in per_metric] if per_metric else []
    names += [f"{s.metric}__since_step_over_{number_text(s.min_step)}" for s in resolved.steps]
    for t in resolved.transport:
        path = f"{number_text(t.distance)}_over_{t.rate_metric}_per_{number_text(t.rate_period_s)}s_{level}"
        names += [f"{t.upstream}__{output}_{path}" for output in TRANSPORT_OUTPUTS if output in t.outputs]
    return names


def number_text(value: float) -> str:
    """The shortest text that reads back as `value` (10.0 -> "10", 0.5 -> "0.5"): names stay unique."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _key(where: str, name: str, metrics: Sequence[str], roles: Mapping[str, str]) -> str:
    if name in metrics:
        return name
    if name in roles:
        return roles[name]
    raise ValueError(f"{where} is neither one of metrics {list(metrics)} nor a taxonomy role {sorted(roles)}")


class _Steps:
    """Durations that must be whole numbers of sample steps within one pack."""

    def __init__(self, sample_period_s: float, pack_s: int) -> None:
        self.period = sample_period_s
        self.pack_s = pack_s

    def whole(self, where: str, seconds: float, minimum: int) -> None:
        count = seconds / self.period
        if seconds <= 0 or abs(count - round(count)) > 1e-9:
            raise ValueError(f"{where}: not a positive whole number of sample steps (sample_period_s={self.period:g})")
        if round(count) < minimum:
            raise ValueError(f"{where}: shorter than {minimum} sample steps (sample_period_s={self.period:g})")
        if seconds > self.pack_s:
            raise ValueError(f"{where}: longer than pack_window_s={self.pack_s}")
