"""Rollouts: the plan the orchestrator writes and the state it tracks."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from .common import Contract, SemVer, ThingName, UtcDatetime
from .model import Precision


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
    timeout_s: int = Field(default=3600, gt=0)
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
