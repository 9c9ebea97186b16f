"""Rollouts: the policy they follow, the plan the orchestrator writes and the state it tracks."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, ValidationError, field_validator, model_validator

from . import names
from .common import Contract, SemVer, ThingName, UtcDatetime, validation_problems
from .compat import StrEnum
from .model import Precision


class RolloutPolicy(Contract):
    """The numbers a rollout follows, with their defaults: the one place they are defined.

    The orchestrator, status intake and the wave controller read it from their environment
    (`from_environment`, variables ROLLOUT_POLICY_ENV); the CDK stack sets those from its context
    keys (cdk/constructs/config.py); `edgeloop fleet plan` takes the planning ones as options.
    """

    canary_share: float = Field(
        default=0.1, gt=0, le=1, description="share of each tier's devices in its first (canary) wave; at least one"
    )
    failure_threshold: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="share of a wave's devices failing that stops the rollout and rolls it back",
    )
    rollout_timeout_s: int = Field(default=3600, gt=0, description="a rollout in progress this long times out")
    wave_timeout_s: float = Field(
        default=900, gt=0, allow_inf_nan=False, description="a wave that heard no report this long times out"
    )
    offline_silence_s: float = Field(
        default=900, gt=0, allow_inf_nan=False, description="a device silent this long is marked offline"
    )

    @field_validator("*", mode="before")
    @classmethod
    def _not_a_flag(cls, value: object) -> object:
        if isinstance(value, bool):  # a number field would otherwise read true as 1
            raise ValueError("is a boolean, not a number")
        return value

    def environment(self) -> dict[str, str]:
        """The policy as the environment variables `from_environment` reads."""
        return {variable: _number_text(getattr(self, field)) for field, variable in ROLLOUT_POLICY_ENV.items()}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> RolloutPolicy:
        """The policy from ROLLOUT_POLICY_ENV (unset or empty: the default); a bad value raises
        ValueError naming the variable and the value."""
        values = {field: environ[variable] for field, variable in ROLLOUT_POLICY_ENV.items() if environ.get(variable)}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = validation_problems(exc, name_of=lambda field: ROLLOUT_POLICY_ENV.get(field, field))
            raise ValueError(f"invalid rollout policy: {problems}") from None


def _number_text(value: float) -> str:
    """900.0 as "900" (what a user would write), other numbers as Python prints them."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


# RolloutPolicy field -> the environment variable that sets it
ROLLOUT_POLICY_ENV = {
    "canary_share": names.CANARY_SHARE_ENV,
    "failure_threshold": names.FAILURE_THRESHOLD_ENV,
    "rollout_timeout_s": names.ROLLOUT_TIMEOUT_S_ENV,
    "wave_timeout_s": names.WAVE_TIMEOUT_S_ENV,
    "offline_silence_s": names.OFFLINE_SILENCE_S_ENV,
}


class DeploymentState(StrEnum):
    PLANNED = "planned"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    TIMED_OUT = "timed_out"


class ExcludedDevice(Contract):
    thing_name: ThingName
    reason: str


class RolloutWave(Contract):
    index: int = Field(ge=0)
    precision: Precision
    targets: list[ThingName] = Field(min_length=1)
    failure_threshold: float = Field(ge=0, le=1, description="share of failed devices that stops the rollout")
    state: DeploymentState = DeploymentState.PLANNED
    started_at: UtcDatetime | None = Field(default=None, description="when the wave was delivered (wave timeout)")


class DeploymentRecord(Contract):
    deployment_id: str = Field(min_length=1)
    model_id: str
    model_version: SemVer
    model_package_arn: str
    waves: list[RolloutWave]
    excluded: list[ExcludedDevice] = Field(default_factory=list)
    state: DeploymentState = DeploymentState.PLANNED
    created_at: UtcDatetime
    timeout_s: int = Field(default=RolloutPolicy.model_fields["rollout_timeout_s"].default, gt=0)
    reason: str = Field(default="", description="why the rollout stopped (failed wave, no eligible device)")

    @model_validator(mode="after")
    def _targets_unique(self) -> DeploymentRecord:
        seen: set[str] = set()
        for wave in self.waves:
            repeated = seen.intersection(wave.targets)
            if repeated:
                raise ValueError(f"wave {wave.index} repeats targets {sorted(repeated)}")
            seen.update(wave.targets)
        return self

    @property
    def targets(self) -> list[str]:
        return [t for wave in self.waves for t in wave.targets]
