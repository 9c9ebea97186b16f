"""The code paths whose AWS calls the contract tests record: each runs the real code in moto.

moto has no greengrassv2: its calls are answered by `greengrass_answers` (a botocore before-call
handler, as botocore.stub.Stubber does), after botocore has validated and serialized them.
Set-up calls (tables, buckets, the model package, the stack's policies) happen before recording
starts, so only what the code under test sends is checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from botocore.awsrequest import AWSResponse
from botocore_contract import Call, recording
from moto import mock_aws
from registry_helpers import create_package

from edgeloop.cloud.aws import client
from edgeloop.schemas import (
    Architecture,
    CompatibilityTier,
    DeviceRecord,
    DeviceStatus,
    ModelManifest,
    ModelMetrics,
    Precision,
    feature_schema_hash,
    names,
)

REGION = "eu-west-1"
NOW = datetime.now(UTC).replace(microsecond=0)
FEATURES = ["speed__mean", "temp_die__mean", "cold_od__last"]
GREENGRASS_ANSWERS = {
    "CreateDeployment": {"deploymentId": "d-1", "iotJobId": "j-1", "iotJobArn": "arn:aws:iot:eu-west-1:1:job/j-1"},
}
POLICY_DOCUMENT = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
)


def greengrass_answers(model, **_) -> tuple[AWSResponse, dict]:
    """Answer a greengrassv2 call that botocore has validated and serialized, without sending it."""
    return AWSResponse("https://greengrass.local", 200, {}, None), dict(GREENGRASS_ANSWERS.get(model.name, {}))


@contextmanager
def fake_account() -> Iterator[None]:
    """moto, with greengrassv2 answered; the shared clients (edgeloop.cloud.aws) are fresh inside."""
    from edgeloop.cloud.aws import reset_clients

    with mock_aws():
        reset_clients()
        greengrass = client("greengrassv2")
        greengrass.meta.events.register("before-call.greengrassv2", greengrass_answers)
        try:
            yield
        finally:
            reset_clients()


# --- the orchestrator, delivering through Greengrass ---------------------------------------------
def _device(thing: str, architecture: Architecture, precisions: list[Precision], line: str = "line-1") -> DeviceRecord:
    return DeviceRecord(
        thing_name=thing,
        site="plant-a",
        line_id=line,
        use_case="extrusion",
        architecture=architecture,
        runtime_version="1.2.0",
        supported_precisions=precisions,
        status=DeviceStatus.REGISTERED,
        status_since=NOW - timedelta(hours=1),
        last_seen=NOW - timedelta(minutes=1),
    )


def _manifest(line: str) -> ModelManifest:
    def tier(precision: Precision, architectures: list[Architecture]) -> CompatibilityTier:
        return CompatibilityTier(
            precision=precision,
            architectures=architectures,
            min_runtime_version="1.0.0",
            payload_key=f"{names.MODELS_PREFIX}/extrusion-{line}/2.0.0/{precision.value}.npz",
            payload_bytes=77_000,
            sha256="a" * 64,
            max_abs_error=0.0 if precision is Precision.FP32 else 1e-3,
        )

    return ModelManifest(
        model_id=f"extrusion-{line}",
        version="2.0.0",
        use_case="extrusion",
        line_ids=[line],
        family="xgboost",
        target="cold_od",
        features=FEATURES,
        feature_schema_hash=feature_schema_hash(FEATURES),
        tiers=[tier(Precision.FP32, [Architecture.X86_64]), tier(Precision.FP16_LEAVES, [Architecture.ARMV7L])],
        training_start=NOW - timedelta(days=7),
        training_end=NOW - timedelta(days=1),
        training_data_sha256="b" * 64,
        metrics=ModelMetrics(mse=0.01, mae=0.05, n_train=1000, n_test=200),
        created_at=NOW - timedelta(hours=2),
    )


def _approved_package(line: str) -> str:
    """A manifest in the model bucket and an approved package naming it; returns the package ARN."""
    key = f"{names.MODELS_PREFIX}/extrusion-{line}/2.0.0/manifest.json"
    boto3.client("s3").put_object(
        Bucket=names.LOCAL_MODEL_BUCKET, Key=key, Body=_manifest(line).model_dump_json().encode()
    )
    sagemaker = boto3.client("sagemaker")
    group = names.model_package_group_name("extrusion", line)
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    return create_package(sagemaker, group, f"s3://{names.LOCAL_MODEL_BUCKET}/{key}")


def orchestrator_environment() -> dict[str, str]:
    return {
        names.DEVICE_TABLE_ENV: names.LOCAL_DEVICE_TABLE,
        names.DEPLOYMENT_TABLE_ENV: names.LOCAL_DEPLOYMENT_TABLE,
        names.MODEL_BUCKET_ENV: names.LOCAL_MODEL_BUCKET,
        names.DELIVERY_ENV: "greengrass",
        names.GATEWAY_COMPONENT_VERSION_ENV: "1.0.0",
        names.MODEL_RUNNER_COMPONENT_VERSION_ENV: "1.0.0",
    }


def orchestrator_and_enrollment_calls() -> tuple[list[Call], list[Call]]:
    """An approval event through the orchestrator's Lambda handler (registry, manifest, plan, device
    marks, the first wave delivered through Greengrass), then the same event again. Then line-2's
    model is approved while line 2 has no gateway yet, and a gateway that announces itself there
    afterwards is enrolled (cloud/fleet/enrollment.py) through the same delivery."""
    from edgeloop.cloud.fleet.devices import DeviceTable
    from edgeloop.functions.orchestrator import handler

    with fake_account():
        from edgeloop.local.aws import create_local_resources

        create_local_resources()
        devices = DeviceTable(names.LOCAL_DEVICE_TABLE)
        fleet = [_device(f"gw-x{i}", Architecture.X86_64, [Precision.FP32]) for i in range(4)]
        fleet.append(_device("gw-arm", Architecture.ARMV7L, [Precision.FP16_LEAVES]))
        _register(devices, fleet)
        event = _approval_event(_approved_package("line-1"))
        handler._settings.cache_clear()
        with recording() as rollout_calls:
            handler.lambda_handler(event, None)
            handler.lambda_handler(event, None)  # EventBridge delivers at least once
        handler.lambda_handler(_approval_event(_approved_package("line-2")), None)  # no gateway on line 2 yet
        handler._settings.cache_clear()
        late = _device("gw-late", Architecture.X86_64, [Precision.FP32], line="line-2")
        _register(devices, [late])
        with recording() as enrollment_calls:
            _enroll(late, devices)
    return rollout_calls, enrollment_calls


def _register(devices, fleet: list[DeviceRecord]) -> None:
    for device in fleet:
        devices.put(device)
        client("iot").create_thing(thingName=device.thing_name)


def _approval_event(model_package_arn: str) -> dict:
    from edgeloop.local.approval import model_package_state_change

    package = boto3.client("sagemaker").describe_model_package(ModelPackageName=model_package_arn)
    return model_package_state_change(package)


def _enroll(device: DeviceRecord, devices) -> None:
    from edgeloop.cloud.fleet.enrollment import enroll
    from edgeloop.cloud.fleet.rollout_context import rollout_context
    from edgeloop.cloud.fleet.rollout_settings import RolloutSettings

    settings = RolloutSettings.from_env()
    with rollout_context(settings) as rollout:
        enrollment = enroll(
            device,
            devices=rollout.devices,
            deployments=rollout.deployments,
            delivery=rollout.delivery,
            model_bucket=settings.model_bucket,
            now=NOW,
            policy=rollout.policy,
        )
    if not enrollment.started:
        raise AssertionError(f"the late gateway was not enrolled: {enrollment.reason}")


# --- the delivery on its own: waves into an existing group, a rollback wave into a new one ---------
def delivery_calls() -> list[Call]:
    from edgeloop.cloud.fleet.delivery import ROLLBACK_WAVE_BASE, GreengrassDelivery, cohort_group_name
    from edgeloop.schemas import ModelUpdate, RolloutWave

    update = ModelUpdate(
        deployment_id="edgeloop-extrusion-line-1-2-0-0123456789ab",
        model_id="extrusion-line-1",
        version="2.0.0",
        precision=Precision.FP32,
        payload_uri=f"s3://{names.LOCAL_MODEL_BUCKET}/models/extrusion-line-1/2.0.0/fp32.npz",
        sha256="c" * 64,
        features=FEATURES,
        feature_schema_hash=feature_schema_hash(FEATURES),
    )
    waves = [
        RolloutWave(index=i, precision=Precision.FP32, targets=["gw-1", "gw-2"], failure_threshold=0.2) for i in (0, 1)
    ]
    waves.append(waves[0].model_copy(update={"index": ROLLBACK_WAVE_BASE}))
    with fake_account():
        for thing in ("gw-1", "gw-2"):
            client("iot").create_thing(thingName=thing)
        # the first wave's group exists already (an earlier attempt): create refuses, describe answers
        client("iot").create_thing_group(thingGroupName=cohort_group_name(update.deployment_id, waves[0], update))
        delivery = GreengrassDelivery(
            client("greengrassv2"), gateway_component_version="1.0.0", model_runner_component_version="1.0.0"
        )
        with recording() as calls:
            for wave in waves:
                delivery.deliver(update.deployment_id, wave, update)
            delivery.close()
    return calls


# --- provisioning: a plain gateway, a re-provisioned one, a Greengrass core device, a failed run ---
def provisioning_calls(tmp_path: Path) -> list[Call]:
    from edgeloop import provisioning

    def request(out: str, **changes) -> provisioning.ProvisioningRequest:
        fields = dict(site="plant-gent", line_id="line-1", architecture="aarch64", out_dir=tmp_path / out)
        return provisioning.ProvisioningRequest.build(**{**fields, **changes})

    with fake_account():
        session = boto3.Session(region_name=REGION)
        _stack_stand_in(session)
        with recording() as calls:
            provisioning.provision_gateway(request("plain", thing_name="gw-plain"), session=session)
            provisioning.provision_gateway(
                request("plain", thing_name="gw-plain", line_id="line-2", force=True), session=session
            )
            provisioning.provision_gateway(request("core", thing_name="gw-core", greengrass=True), session=session)
        _outdate_thing_policy(session, "gw-core")
        with recording() as more_calls:
            provisioning.provision_gateway(
                request("core", thing_name="gw-core", greengrass=True, force=True), session=session
            )
            (tmp_path / "blocked").write_text("a file where the output folder should be")
            try:
                provisioning.provision_gateway(
                    request("blocked", thing_name="gw-failed", greengrass=True), session=session
                )
            except Exception:  # noqa: BLE001 - the failure is the point: its rollback calls are recorded
                pass
            else:
                raise AssertionError("provisioning into a file instead of a folder should have failed")
    return calls + more_calls


def _outdate_thing_policy(session: boto3.Session, thing_name: str) -> None:
    """An older release's document as the default, with every version slot taken (AWS keeps five)."""
    from edgeloop.schemas import iot_policies

    iot = session.client("iot")
    for _ in range(4):
        iot.create_policy_version(
            policyName=iot_policies.thing_policy_name(thing_name), policyDocument=POLICY_DOCUMENT, setAsDefault=True
        )


def _stack_stand_in(session: boto3.Session) -> None:
    """What provisioning reads of the deployed CDK stack: policies, fleet group, role alias, outputs."""
    from edgeloop.provisioning import STACK_NAME
    from edgeloop.provisioning.request import ROLE_ALIAS_OUTPUT

    iot = session.client("iot")
    for policy in (names.GATEWAY_DATA_POLICY, names.GREENGRASS_CORE_POLICY):
        iot.create_policy(policyName=policy, policyDocument=POLICY_DOCUMENT)
    iot.create_thing_group(thingGroupName=names.GREENGRASS_GATEWAYS_THING_GROUP)  # the base deployment's target
    alias = f"{STACK_NAME}-gateway-token-exchange"
    iot.create_role_alias(roleAlias=alias, roleArn="arn:aws:iam::123456789012:role/token-exchange")
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}, "Outputs": {ROLE_ALIAS_OUTPUT: {"Value": alias}}}
    session.client("cloudformation").create_stack(StackName=STACK_NAME, TemplateBody=json.dumps(template))
