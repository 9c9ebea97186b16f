"""How a wave's ModelUpdate reaches its devices: a Greengrass deployment in AWS, MQTT locally.

Greengrass v2 deploys to thing groups, and a group's deployment replaces the whole component set
on its members, so each cohort (one deployment, one compatibility tier) gets its own group:
every wave adds its devices to the cohort's group and redeploys the group with the gateway
component beside the model runner. The model runner receives the ModelUpdate as a configuration
merge under `modelUpdate`. Locally (moto has no greengrassv2), edgeloop.local.delivery.LocalDelivery publishes the same
document on each device's model-update topic, which the model runner subscribes to instead.

A rollback delivers the previous model as one more wave of the same deployment, with an index
from ROLLBACK_WAVE_BASE up. Its devices may have run different previous models, so in Greengrass
each restored model gets its own group (named after model and version) rather than the cohort's,
whose deployment would otherwise put one previous model on every member.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from botocore.exceptions import ClientError

from edgeloop.cloud.aws import client as aws_client
from edgeloop.schemas import ModelUpdate, RolloutWave, names

from .rollout_settings import RolloutSettings

ROLLOUT_GROUP_PREFIX = f"{names.PROJECT}-rollout-"
MAX_THING_GROUP_NAME = 128
ROLLBACK_WAVE_BASE = 1000  # wave indexes from here on restore a previous model

DEFAULT_DEPLOYMENT_POLICIES: dict[str, Any] = {
    # A device that cannot apply the deployment returns to its previous components.
    "failureHandlingPolicy": "ROLLBACK",
    # The model runner may defer the update while it finishes scoring a batch.
    "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
    "configurationValidationPolicy": {"timeoutInSeconds": 60},
}


class ModelDelivery(Protocol):
    def deliver(self, deployment_id: str, wave: RolloutWave, update: ModelUpdate) -> None:
        """Send `update` to every target of `wave`; raise if it could not be sent."""

    def close(self) -> None:
        """Release what the delivery holds (a broker connection)."""


def check_same_deployment(deployment_id: str, update: ModelUpdate) -> None:
    if update.deployment_id != deployment_id:
        raise ValueError(f"update.deployment_id={update.deployment_id!r} is not deployment {deployment_id!r}")


def is_rollback_wave(wave: RolloutWave) -> bool:
    return wave.index >= ROLLBACK_WAVE_BASE


def cohort_group_name(deployment_id: str, wave: RolloutWave, update: ModelUpdate | None = None) -> str:
    """The thing group of a wave: per tier for a rollout's waves, per restored model for a rollback."""
    cohort = wave.precision.value
    if is_rollback_wave(wave):
        if update is None:
            raise ValueError(f"rollback wave {wave.index} of {deployment_id!r} needs its ModelUpdate to name a group")
        restored = hashlib.sha256(f"{update.model_id}/{update.version}".encode()).hexdigest()[:8]
        cohort = f"restore-{restored}-{cohort}"
    name = f"{ROLLOUT_GROUP_PREFIX}{deployment_id}-{cohort}"
    if len(name) > MAX_THING_GROUP_NAME:
        raise ValueError(f"deployment_id={deployment_id!r} makes thing group name {name!r} longer than 128 characters")
    return name


class GreengrassDelivery:
    """Delivers through AWS IoT Greengrass v2 thing-group deployments."""

    def __init__(
        self,
        client: Any,
        *,
        gateway_component_version: str,
        model_runner_component_version: str,
        iot_client: Any | None = None,
        deployment_policies: Mapping[str, Any] = DEFAULT_DEPLOYMENT_POLICIES,
    ) -> None:
        self.greengrass = client
        self.iot = iot_client if iot_client is not None else aws_client("iot")
        self.gateway_component_version = gateway_component_version
        self.model_runner_component_version = model_runner_component_version
        self.deployment_policies = dict(deployment_policies)

    def deliver(self, deployment_id: str, wave: RolloutWave, update: ModelUpdate) -> None:
        check_same_deployment(deployment_id, update)
        group_name = cohort_group_name(deployment_id, wave, update)
        group_arn = self._ensure_group(group_name, deployment_id)
        for thing in wave.targets:
            self.iot.add_thing_to_thing_group(thingGroupName=group_name, thingName=thing)
        self.greengrass.create_deployment(
            targetArn=group_arn,
            deploymentName=f"{deployment_id}-wave-{wave.index}",
            components=self.components(update),
            deploymentPolicies=self.deployment_policies,
            tags={f"{names.PROJECT}:deployment_id": deployment_id, f"{names.PROJECT}:wave": str(wave.index)},
        )
        # Only now: leaving the old cohort first would strip the components until the new
        # deployment arrives.
        self._leave_other_cohorts(wave.targets, keep=group_name)

    def components(self, update: ModelUpdate) -> dict[str, Any]:
        return {
            names.GATEWAY_COMPONENT: {"componentVersion": self.gateway_component_version},
            names.MODEL_RUNNER_COMPONENT: {
                "componentVersion": self.model_runner_component_version,
                "configurationUpdate": {
                    "merge": json.dumps({names.MODEL_UPDATE_CONFIG_KEY: update.model_dump(mode="json")})
                },
            },
        }

    def close(self) -> None:
        """Nothing to release: boto3 clients are shared."""

    def _ensure_group(self, group_name: str, deployment_id: str) -> str:
        try:
            response = self.iot.create_thing_group(
                thingGroupName=group_name,
                thingGroupProperties={"thingGroupDescription": f"{names.PROJECT} rollout cohort of {deployment_id}"},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
            response = self.iot.describe_thing_group(thingGroupName=group_name)
        return response["thingGroupArn"]

    def _leave_other_cohorts(self, things: Iterable[str], keep: str) -> None:
        """A device in two rollout groups would merge two deployments; keep only the newest."""
        paginator = self.iot.get_paginator("list_thing_groups_for_thing")
        for thing in things:
            for page in paginator.paginate(thingName=thing):
                for group in page.get("thingGroups", []):
                    name = group["groupName"]
                    if name.startswith(ROLLOUT_GROUP_PREFIX) and name != keep:
                        self.iot.remove_thing_from_thing_group(thingGroupName=name, thingName=thing)


# Deliveries that live outside the Lambda bundle register here. The embedded local runtime's
# MQTT delivery (edgeloop.local.delivery) does so when edgeloop.local is imported; the cloud code
# never imports the local runtime, so the dependency runs one way.
_REGISTERED_DELIVERIES: dict[str, Callable[[], ModelDelivery]] = {}


def register_delivery(kind: str, factory: Callable[[], ModelDelivery]) -> None:
    """Make `EDGELOOP_DELIVERY=<kind>` build its delivery with `factory` in this process."""
    _REGISTERED_DELIVERIES[kind] = factory


def delivery_from_settings(settings: RolloutSettings) -> ModelDelivery:
    if settings.delivery == "greengrass":
        return GreengrassDelivery(
            aws_client("greengrassv2"),
            gateway_component_version=settings.gateway_component_version,
            model_runner_component_version=settings.model_runner_component_version,
        )
    factory = _REGISTERED_DELIVERIES.get(settings.delivery)
    if factory is None:
        raise ValueError(
            f"{names.DELIVERY_ENV}={settings.delivery!r} has no delivery in this process"
            " ('local' is the embedded runtime's: import edgeloop.local first)"
        )
    return factory()
