"""How a wave's ModelUpdate reaches its devices: a Greengrass deployment in AWS, MQTT locally.

Greengrass v2 deploys to thing groups, and a group's deployment replaces the whole component set
on its members, so each cohort (one deployment, one compatibility tier) gets its own group:
every wave adds its devices to the cohort's group and redeploys the group with the gateway
component beside the model runner. The model runner receives the ModelUpdate as a configuration
merge under `modelUpdate`. Locally (moto has no greengrassv2), LocalDelivery publishes the same
document on each device's model-update topic, which the model runner subscribes to instead.

A rollback delivers the previous model as one more wave of the same deployment, with an index
from ROLLBACK_WAVE_BASE up. Its devices may have run different previous models, so in Greengrass
each restored model gets its own group (named after model and version) rather than the cohort's,
whose deployment would otherwise put one previous model on every member.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from botocore.exceptions import ClientError
from pydantic import Field, FilePath

from edgeloop.functions.common.aws import client as aws_client
from edgeloop.functions.common.settings import EnvSettings
from edgeloop.schemas import ModelUpdate, RolloutWave, names

from .settings import RolloutSettings

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


def _check_same_deployment(deployment_id: str, update: ModelUpdate) -> None:
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
        _check_same_deployment(deployment_id, update)
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


class LocalDelivery:
    """Publishes the ModelUpdate JSON on each target's model-update topic (the embedded runtime)."""

    def __init__(self, publish: Callable[[str, bytes], None], close: Callable[[], None] | None = None) -> None:
        self._publish = publish
        self._close = close

    def deliver(self, deployment_id: str, wave: RolloutWave, update: ModelUpdate) -> None:
        _check_same_deployment(deployment_id, update)
        payload = update.model_dump_json().encode()
        for thing in wave.targets:
            self._publish(names.model_update_topic(thing), payload)

    def close(self) -> None:
        if self._close is not None:
            self._close()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> LocalDelivery:
        """Connect (on first delivery) to the local broker with the cloud identity from the env."""
        broker = LocalBrokerSettings.from_env(environ)
        connection = _LazyBrokerConnection(broker)
        return cls(connection.publish, connection.stop)


class LocalBrokerSettings(EnvSettings):
    host: str = Field(validation_alias=names.LOCAL_BROKER_HOST_ENV, min_length=1)
    port: int = Field(validation_alias=names.LOCAL_BROKER_PORT_ENV, gt=0, lt=65536)
    cert_path: FilePath = Field(validation_alias=names.LOCAL_CLOUD_CERT_ENV)
    key_path: FilePath = Field(validation_alias=names.LOCAL_CLOUD_KEY_ENV)
    ca_path: FilePath = Field(validation_alias=names.LOCAL_CA_ENV)


class _LazyBrokerConnection:
    """Status intake may advance a rollout on every report but delivers rarely: connect on demand."""

    def __init__(self, broker: LocalBrokerSettings) -> None:
        self.broker = broker
        self._connection: Any = None

    def publish(self, topic: str, payload: bytes) -> None:
        if self._connection is None:
            self._connection = self._connect()
        self._connection.publish(topic, payload, qos=1)

    def stop(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.stop()

    def _connect(self) -> Any:
        # Imported here: the local runtime (and awsiotsdk) is not part of the Lambda bundle.
        from edgeloop.local.mqtt import connect_mqtt5
        from edgeloop.local.pki import IssuedCert

        common_name = certificate_common_name(self.broker.cert_path)
        cert = IssuedCert(
            cert_path=self.broker.cert_path,
            key_path=self.broker.key_path,
            ca_path=self.broker.ca_path,
            common_name=common_name,
        )
        client_id = f"{common_name}-delivery-{uuid.uuid4().hex[:8]}"
        return connect_mqtt5(self.broker.host, self.broker.port, cert, client_id)


def certificate_common_name(cert_path) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    certificate = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not common_names:
        raise ValueError(f"certificate {cert_path} has no common name")
    return str(common_names[0].value)


def delivery_from_settings(settings: RolloutSettings) -> GreengrassDelivery | LocalDelivery:
    if settings.delivery == "local":
        return LocalDelivery.from_environment()
    if settings.delivery == "greengrass":
        return GreengrassDelivery(
            aws_client("greengrassv2"),
            gateway_component_version=settings.gateway_component_version,
            model_runner_component_version=settings.model_runner_component_version,
        )
    raise ValueError(f"{names.DELIVERY_ENV}={settings.delivery!r} is neither 'greengrass' nor 'local'")
