"""Environment of the rollout functions: the orchestrator, status intake and the wave controller.

EDGELOOP_DEVICE_TABLE, EDGELOOP_DEPLOYMENT_TABLE, EDGELOOP_MODEL_BUCKET (required);
EDGELOOP_DELIVERY = "greengrass" (default) | "local"; with greengrass also
EDGELOOP_GATEWAY_COMPONENT_VERSION and EDGELOOP_MODEL_RUNNER_COMPONENT_VERSION (required there:
a deployment pins exact component versions). The local delivery reads its broker settings itself
(edgeloop.local.delivery). The rollout policy (canary share, failure threshold, timeouts, offline
silence) comes from its own variables, schemas.deployment.ROLLOUT_POLICY_ENV, each defaulting to
RolloutPolicy's value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, Self

from pydantic import Field, model_validator

from edgeloop.cloud.settings import EnvSettings
from edgeloop.schemas import RolloutPolicy, names
from edgeloop.schemas.common import SemVer

DeliveryKind = Literal["greengrass", "local"]


class RolloutSettings(EnvSettings):
    device_table: str = Field(validation_alias=names.DEVICE_TABLE_ENV, min_length=3, max_length=255)
    deployment_table: str = Field(validation_alias=names.DEPLOYMENT_TABLE_ENV, min_length=3, max_length=255)
    model_bucket: str = Field(validation_alias=names.MODEL_BUCKET_ENV, min_length=3, max_length=63)
    delivery: DeliveryKind = Field(default="greengrass", validation_alias=names.DELIVERY_ENV)
    gateway_component_version: SemVer | None = Field(default=None, validation_alias=names.GATEWAY_COMPONENT_VERSION_ENV)
    model_runner_component_version: SemVer | None = Field(
        default=None, validation_alias=names.MODEL_RUNNER_COMPONENT_VERSION_ENV
    )
    policy: RolloutPolicy = RolloutPolicy()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        environ = os.environ if environ is None else environ
        settings = super().from_env(environ)
        return settings.model_copy(update={"policy": RolloutPolicy.from_environment(environ)})

    @model_validator(mode="after")
    def _greengrass_pins_versions(self) -> RolloutSettings:
        if self.delivery == "greengrass":
            missing = [
                variable
                for variable, value in (
                    (names.GATEWAY_COMPONENT_VERSION_ENV, self.gateway_component_version),
                    (names.MODEL_RUNNER_COMPONENT_VERSION_ENV, self.model_runner_component_version),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"{names.DELIVERY_ENV}='greengrass' needs {' and '.join(missing)} set")
        return self
