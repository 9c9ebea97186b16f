"""Model delivery: the Greengrass request shape (botocore Stubber) and the local MQTT publishes."""

from __future__ import annotations

import datetime as dt
import json
import sys
import types

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleet_helpers import FEATURES

from edgeloop.cloud.fleet.delivery import DEFAULT_DEPLOYMENT_POLICIES, GreengrassDelivery, delivery_from_settings
from edgeloop.cloud.fleet.rollout_settings import RolloutSettings
from edgeloop.local.delivery import LocalDelivery
from edgeloop.schemas import ModelUpdate, Precision, RolloutWave, feature_schema_hash, names

DEPLOYMENT = "edgeloop-extrusion-line-1-3-0123456789ab"
GROUP = f"edgeloop-rollout-{DEPLOYMENT}-fp16-leaves"
GROUP_ARN = f"arn:aws:iot:eu-west-1:123456789012:thinggroup/{GROUP}"


def _update(deployment_id: str = DEPLOYMENT) -> ModelUpdate:
    return ModelUpdate(
        deployment_id=deployment_id,
        model_id="extrusion-line-1",
        version="2.0.0",
        precision=Precision.FP16_LEAVES,
        payload_uri="s3://models/models/extrusion-line-1/2.0.0/fp16-leaves.npz",
        sha256="b" * 64,
        features=FEATURES,
        feature_schema_hash=feature_schema_hash(FEATURES),
    )


WAVE = RolloutWave(index=1, precision=Precision.FP16_LEAVES, targets=["gw-1", "gw-2"], failure_threshold=0.2)


def _stubbed_clients():
    greengrass = boto3.client("greengrassv2", region_name="eu-west-1")
    iot = boto3.client("iot", region_name="eu-west-1")
    return greengrass, Stubber(greengrass), iot, Stubber(iot)


def _expect_group_and_members(iot_stub: Stubber, *, exists: bool = False) -> None:
    create_params = {
        "thingGroupName": GROUP,
        "thingGroupProperties": {"thingGroupDescription": f"edgeloop rollout cohort of {DEPLOYMENT}"},
    }
    if exists:
        iot_stub.add_client_error("create_thing_group", "ResourceAlreadyExistsException", expected_params=create_params)
        iot_stub.add_response(
            "describe_thing_group",
            {"thingGroupName": GROUP, "thingGroupArn": GROUP_ARN},
            {"thingGroupName": GROUP},
        )
    else:
        iot_stub.add_response(
            "create_thing_group", {"thingGroupName": GROUP, "thingGroupArn": GROUP_ARN}, create_params
        )
    for thing in WAVE.targets:
        iot_stub.add_response("add_thing_to_thing_group", {}, {"thingGroupName": GROUP, "thingName": thing})


def test_greengrass_delivery_deploys_the_cohort_group_with_both_components():
    greengrass, gg_stub, iot, iot_stub = _stubbed_clients()
    _expect_group_and_members(iot_stub)
    update = _update()
    gg_stub.add_response(
        "create_deployment",
        {"deploymentId": "d-1", "iotJobId": "j-1"},
        {
            "targetArn": GROUP_ARN,
            "deploymentName": f"{DEPLOYMENT}-wave-1",
            "components": {
                names.GATEWAY_COMPONENT: {"componentVersion": "1.4.0"},
                names.MODEL_RUNNER_COMPONENT: {
                    "componentVersion": "2.1.0",
                    "configurationUpdate": {"merge": json.dumps({"modelUpdate": update.model_dump(mode="json")})},
                },
            },
            "deploymentPolicies": DEFAULT_DEPLOYMENT_POLICIES,
            "tags": {"edgeloop:deployment_id": DEPLOYMENT, "edgeloop:wave": "1"},
        },
    )
    # gw-1 still sits in an older rollout's group (it leaves it) and in a group edgeloop does not own.
    iot_stub.add_response(
        "list_thing_groups_for_thing",
        {
            "thingGroups": [
                {"groupName": GROUP, "groupArn": GROUP_ARN},
                {"groupName": "edgeloop-rollout-older-fp32", "groupArn": "arn:older"},
                {"groupName": "plant-a-gateways", "groupArn": "arn:plant"},
            ]
        },
        {"thingName": "gw-1"},
    )
    iot_stub.add_response(
        "remove_thing_from_thing_group", {}, {"thingGroupName": "edgeloop-rollout-older-fp32", "thingName": "gw-1"}
    )
    iot_stub.add_response("list_thing_groups_for_thing", {"thingGroups": [{"groupName": GROUP}]}, {"thingName": "gw-2"})

    delivery = GreengrassDelivery(
        greengrass, iot_client=iot, gateway_component_version="1.4.0", model_runner_component_version="2.1.0"
    )
    with gg_stub, iot_stub:
        delivery.deliver(DEPLOYMENT, WAVE, update)
    gg_stub.assert_no_pending_responses()
    iot_stub.assert_no_pending_responses()

    merged = json.loads(delivery.components(update)[names.MODEL_RUNNER_COMPONENT]["configurationUpdate"]["merge"])
    assert ModelUpdate.model_validate(merged["modelUpdate"]) == update


def test_greengrass_delivery_reuses_an_existing_group_and_surfaces_deployment_errors():
    greengrass, gg_stub, iot, iot_stub = _stubbed_clients()
    _expect_group_and_members(iot_stub, exists=True)
    gg_stub.add_client_error("create_deployment", "ThrottlingException", http_status_code=429)
    delivery = GreengrassDelivery(
        greengrass, iot_client=iot, gateway_component_version="1.4.0", model_runner_component_version="2.1.0"
    )
    with gg_stub, iot_stub, pytest.raises(ClientError, match="ThrottlingException"):
        delivery.deliver(DEPLOYMENT, WAVE, _update())
    iot_stub.assert_no_pending_responses()


def test_deliveries_refuse_an_update_of_another_deployment():
    published = []
    with pytest.raises(ValueError, match="update.deployment_id='other' is not deployment"):
        LocalDelivery(lambda topic, payload: published.append(topic)).deliver(DEPLOYMENT, WAVE, _update("other"))
    assert published == []


def test_local_delivery_publishes_the_update_on_each_targets_topic():
    published: list[tuple[str, bytes]] = []
    update = _update()
    LocalDelivery(lambda topic, payload: published.append((topic, payload))).deliver(DEPLOYMENT, WAVE, update)

    assert [topic for topic, _ in published] == ["edgeloop/gw-1/model-update", "edgeloop/gw-2/model-update"]
    assert all(ModelUpdate.model_validate_json(payload) == update for _, payload in published)


def _write_identity(directory, common_name: str) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    paths = {"cert": directory / "cloud.pem", "key": directory / "cloud.key", "ca": directory / "ca.pem"}
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["ca"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return {
        names.LOCAL_BROKER_HOST_ENV: "127.0.0.1",
        names.LOCAL_BROKER_PORT_ENV: "18883",
        names.LOCAL_CLOUD_CERT_ENV: str(paths["cert"]),
        names.LOCAL_CLOUD_KEY_ENV: str(paths["key"]),
        names.LOCAL_CA_ENV: str(paths["ca"]),
    }


def test_local_delivery_from_environment_connects_once_with_the_cloud_identity(tmp_path, monkeypatch):
    environ = _write_identity(tmp_path, "edgeloop-cloud")
    connections = []

    class FakeConnection:
        def __init__(self, host, port, cert, client_id):
            self.args = (host, port, cert, client_id)
            self.published, self.stopped = [], False

        def publish(self, topic, payload, qos=1):
            self.published.append((topic, payload, qos))

        def stop(self):
            self.stopped = True

    def connect_mqtt5(host, port, cert, client_id):
        connections.append(FakeConnection(host, port, cert, client_id))
        return connections[-1]

    monkeypatch.setitem(sys.modules, "edgeloop.local.mqtt", types.SimpleNamespace(connect_mqtt5=connect_mqtt5))
    delivery = LocalDelivery.from_environment(environ)
    assert connections == []  # nothing connects until there is something to deliver

    delivery.deliver(DEPLOYMENT, WAVE, _update())
    delivery.deliver(DEPLOYMENT, WAVE, _update())
    delivery.close()

    assert len(connections) == 1
    host, port, cert, client_id = connections[0].args
    assert (host, port, cert.common_name) == ("127.0.0.1", 18883, "edgeloop-cloud")
    assert str(cert.cert_path) == environ[names.LOCAL_CLOUD_CERT_ENV]
    assert str(cert.key_path) == environ[names.LOCAL_CLOUD_KEY_ENV]
    assert str(cert.ca_path) == environ[names.LOCAL_CA_ENV]
    assert client_id.startswith("edgeloop-cloud-delivery-")
    assert [(t, q) for t, _, q in connections[0].published] == [
        ("edgeloop/gw-1/model-update", 1),
        ("edgeloop/gw-2/model-update", 1),
    ] * 2
    assert connections[0].stopped


def test_local_delivery_settings_name_the_bad_variable(tmp_path):
    environ = _write_identity(tmp_path, "edgeloop-cloud")
    environ[names.LOCAL_BROKER_PORT_ENV] = "99999"
    environ[names.LOCAL_CA_ENV] = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError) as error:
        LocalDelivery.from_environment(environ)
    assert f"{names.LOCAL_BROKER_PORT_ENV}='99999'" in str(error.value)
    assert names.LOCAL_CA_ENV in str(error.value)


def _rollout_environ(**extra) -> dict[str, str]:
    return {
        names.DEVICE_TABLE_ENV: "devices",
        names.DEPLOYMENT_TABLE_ENV: "deployments",
        names.MODEL_BUCKET_ENV: "models",
        **extra,
    }


def test_delivery_is_chosen_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    greengrass = RolloutSettings.from_env(
        _rollout_environ(
            **{
                names.GATEWAY_COMPONENT_VERSION_ENV: "1.4.0",
                names.MODEL_RUNNER_COMPONENT_VERSION_ENV: "2.1.0",
            }
        )
    )
    chosen = delivery_from_settings(greengrass)
    assert isinstance(chosen, GreengrassDelivery)
    assert (chosen.gateway_component_version, chosen.model_runner_component_version) == ("1.4.0", "2.1.0")

    for variable, value in _write_identity(tmp_path, "edgeloop-cloud").items():
        monkeypatch.setenv(variable, value)
    local = RolloutSettings.from_env(_rollout_environ(**{names.DELIVERY_ENV: "local"}))
    assert isinstance(delivery_from_settings(local), LocalDelivery)


def test_greengrass_settings_require_component_versions():
    with pytest.raises(
        ValueError,
        match=f"needs {names.GATEWAY_COMPONENT_VERSION_ENV} and {names.MODEL_RUNNER_COMPONENT_VERSION_ENV} set",
    ):
        RolloutSettings.from_env(_rollout_environ())
    with pytest.raises(ValueError, match=f"{names.DELIVERY_ENV}='carrier-pigeon'"):
        RolloutSettings.from_env(_rollout_environ(**{names.DELIVERY_ENV: "carrier-pigeon"}))


def test_a_delivery_kind_nothing_registered_is_refused_clearly(monkeypatch):
    """EDGELOOP_DELIVERY=local without the embedded runtime imported: the error says what to import."""
    from edgeloop.cloud.fleet import delivery as delivery_module

    monkeypatch.delitem(delivery_module._REGISTERED_DELIVERIES, "local", raising=False)  # restored after the test
    local = RolloutSettings.from_env(_rollout_environ(**{names.DELIVERY_ENV: "local"}))
    with pytest.raises(ValueError) as refused:
        delivery_from_settings(local)
    assert f"{names.DELIVERY_ENV}='local' has no delivery in this process" in str(refused.value)
    assert "import edgeloop.local first" in str(refused.value)
