"""Gateway provisioning against moto's IoT: thing, certificate, policies, groups, connection config.

Greengrass core devices: tests/unit/test_provisioning_greengrass.py."""

from __future__ import annotations

import json
import stat

import boto3
import pytest
from cryptography import x509
from moto import mock_aws
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.provisioning import (
    AMAZON_ROOT_CA,
    ProvisioningError,
    ProvisioningRequest,
    provision_gateway,
)
from edgeloop.schemas import names

POLICY_DOCUMENT = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
)


@pytest.fixture
def iot():
    with mock_aws():
        client = boto3.client("iot", region_name="eu-west-1")
        # what the CDK stack deploys (cdk/constructs/iot.py)
        client.create_policy(policyName=names.GATEWAY_DATA_POLICY, policyDocument=POLICY_DOCUMENT)
        yield client


def request(tmp_path, **changes) -> ProvisioningRequest:
    fields = dict(
        thing_name="gw-gent-1",
        site="plant-gent",
        line_id="line-1",
        architecture="aarch64",
        runtime_version="1.2.0",
        out_dir=tmp_path / "out",
    )
    return ProvisioningRequest.build(**{**fields, **changes})


def groups_of(iot, thing: str) -> set[str]:
    return {g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]}


def test_thing_gets_its_context_attributes_and_type(iot, tmp_path):
    provision_gateway(request(tmp_path), iot=iot)
    thing = iot.describe_thing(thingName="gw-gent-1")
    assert thing["thingTypeName"] == names.GATEWAY_THING_TYPE
    assert thing["attributes"] == {
        "site": "plant-gent",
        "line_id": "line-1",
        "use_case": "extrusion",
        "architecture": "aarch64",
        "runtime_version": "1.2.0",
    }
    searchable = iot.describe_thing_type(thingTypeName=names.GATEWAY_THING_TYPE)["thingTypeProperties"][
        "searchableAttributes"
    ]
    assert searchable == list(names.GATEWAY_THING_TYPE_SEARCHABLE)


def test_active_certificate_is_attached_to_the_thing_with_the_gateway_policy(iot, tmp_path):
    result = provision_gateway(request(tmp_path), iot=iot)
    assert iot.list_thing_principals(thingName="gw-gent-1")["principals"] == [result.certificate_arn]
    attached = [p["policyName"] for p in iot.list_attached_policies(target=result.certificate_arn)["policies"]]
    assert attached == [names.GATEWAY_DATA_POLICY]
    description = iot.describe_certificate(certificateId=result.certificate_id)["certificateDescription"]
    assert description["status"] == "ACTIVE"
    assert result.cert_path.read_text() == description["certificatePem"]


def test_thing_joins_its_site_and_line_groups_which_are_created_once(iot, tmp_path):
    provision_gateway(request(tmp_path), iot=iot)
    provision_gateway(request(tmp_path, thing_name="gw-gent-2", out_dir=tmp_path / "out2"), iot=iot)
    expected = {names.site_thing_group("plant-gent"), names.line_thing_group("line-1")}
    assert groups_of(iot, "gw-gent-1") == expected == groups_of(iot, "gw-gent-2")
    site_group = iot.describe_thing_group(thingGroupName=names.site_thing_group("plant-gent"))
    assert site_group["thingGroupProperties"]["attributePayload"]["attributes"] == {"site": "plant-gent"}
    listed = [g["groupName"] for g in iot.list_thing_groups()["thingGroups"]]
    assert sorted(listed) == sorted(expected)


def test_config_file_is_a_valid_gateway_config_pointing_at_the_written_files(iot, tmp_path):
    result = provision_gateway(request(tmp_path), iot=iot)
    config = GatewayConfig.from_file(result.config_path)
    assert (config.thing_name, config.site, config.line_id, config.use_case) == (
        "gw-gent-1",
        "plant-gent",
        "line-1",
        "extrusion",
    )
    assert (config.architecture, config.runtime_version, config.transport) == ("aarch64", "1.2.0", "mqtt")
    assert (config.broker_host, config.broker_port) == (result.endpoint, 8883)
    assert result.endpoint.endswith("-ats.iot.eu-west-1.amazonaws.com")
    out = (tmp_path / "out").resolve()
    assert (config.cert_path, config.key_path, config.ca_path) == (
        out / "certificate.pem.crt",
        out / "private.pem.key",
        out / "AmazonRootCA1.pem",
    )
    assert config.buffer_path == out / "buffer.db"
    assert "PRIVATE KEY" in config.key_path.read_text()
    assert stat.S_IMODE(config.key_path.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(config.ca_path.read_bytes())
    assert ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == AMAZON_ROOT_CA
    x509.load_pem_x509_certificate(config.cert_path.read_bytes())


def test_device_dir_sets_the_paths_the_gateway_will_see(iot, tmp_path):
    result = provision_gateway(
        request(tmp_path, device_dir="/etc/edgeloop", buffer_path="/var/lib/edgeloop/b.db"), iot=iot
    )
    config = GatewayConfig.from_file(result.config_path)
    assert str(config.cert_path) == "/etc/edgeloop/certificate.pem.crt"
    assert str(config.buffer_path) == "/var/lib/edgeloop/b.db"


def test_reprovisioning_an_existing_thing_is_refused_without_force(iot, tmp_path):
    first = provision_gateway(request(tmp_path), iot=iot)
    with pytest.raises(ProvisioningError, match="thing 'gw-gent-1' already exists .* pass --force"):
        provision_gateway(request(tmp_path, out_dir=tmp_path / "elsewhere"), iot=iot)
    # nothing changed: still one certificate, the first one
    assert iot.list_thing_principals(thingName="gw-gent-1")["principals"] == [first.certificate_arn]
    assert len(iot.list_certificates()["certificates"]) == 1
    assert not (tmp_path / "elsewhere").exists()


def test_force_issues_a_new_certificate_retires_the_old_one_and_moves_groups(iot, tmp_path):
    first = provision_gateway(request(tmp_path), iot=iot)
    second = provision_gateway(request(tmp_path, site="plant-ghent-2", line_id="line-7", force=True), iot=iot)
    assert second.certificate_arn != first.certificate_arn
    assert second.retired_certificates == [first.certificate_arn]
    assert iot.list_thing_principals(thingName="gw-gent-1")["principals"] == [second.certificate_arn]
    old = iot.describe_certificate(certificateId=first.certificate_id)["certificateDescription"]
    assert old["status"] == "INACTIVE"
    assert iot.list_attached_policies(target=first.certificate_arn)["policies"] == []
    assert groups_of(iot, "gw-gent-1") == {names.site_thing_group("plant-ghent-2"), names.line_thing_group("line-7")}
    assert iot.describe_thing(thingName="gw-gent-1")["attributes"]["line_id"] == "line-7"
    assert GatewayConfig.from_file(second.config_path).line_id == "line-7"


def test_missing_policy_stops_before_anything_is_created(tmp_path):
    with mock_aws():
        iot = boto3.client("iot", region_name="eu-west-1")
        with pytest.raises(ProvisioningError, match=f"'{names.GATEWAY_DATA_POLICY}'.* deploy the edgeloop CDK stack"):
            provision_gateway(request(tmp_path), iot=iot)
        assert iot.list_things()["things"] == []
        assert iot.list_certificates()["certificates"] == []


def test_a_failure_midway_removes_what_this_run_created(iot, tmp_path):
    (tmp_path / "out").write_text("a file where the output directory should be")
    with pytest.raises(OSError):
        provision_gateway(request(tmp_path, force=True), iot=iot)
    assert iot.list_things()["things"] == []
    assert iot.list_certificates()["certificates"] == []


def test_existing_output_files_are_not_overwritten_without_force(iot, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "private.pem.key").write_text("someone's key")
    with pytest.raises(ProvisioningError, match="private.pem.key'] already exist"):
        provision_gateway(request(tmp_path), iot=iot)
    assert (tmp_path / "out" / "private.pem.key").read_text() == "someone's key"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"thing_name": "gw gent"}, "thing_name='gw gent'"),
        ({"site": "Plant Gent"}, "site='Plant Gent'"),
        ({"architecture": "sparc"}, "architecture='sparc'"),
        ({"runtime_version": "1.2"}, "runtime_version='1.2'"),
    ],
)
def test_bad_request_names_the_field_and_the_value(tmp_path, change, expected):
    with pytest.raises(ValueError, match="invalid provisioning request") as error:
        request(tmp_path, **change)
    assert expected in str(error.value)


def test_ca_file_must_be_a_pem_certificate(iot, tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ProvisioningError, match=f"ca_file='{bad}' is not a readable PEM certificate"):
        provision_gateway(request(tmp_path, ca_file=bad), iot=iot)


# --- the CLI ---------------------------------------------------------------------------------------
def invoke(*args: str):
    return CliRunner().invoke(app, ["gateway", "provision", "--use-case", "extrusion", *args])


@pytest.fixture
def moto_iot_env(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        client = boto3.client("iot", region_name="eu-west-1")
        client.create_policy(policyName=names.GATEWAY_DATA_POLICY, policyDocument=POLICY_DOCUMENT)
        yield client


def test_cli_provisions_and_refuses_a_second_time_unless_forced(moto_iot_env, tmp_path):
    out = tmp_path / "gw"
    args = ("gw-cli-1", "--site", "plant-gent", "--line", "line-2", "--arch", "x86_64", "--out", str(out))
    first = invoke(*args, "--runtime-version", "2.0.1")
    assert first.exit_code == 0, first.output
    assert "provisioned gw-cli-1" in first.output
    assert GatewayConfig.from_file(out / "gateway.json").runtime_version == "2.0.1"
    again = invoke(*args)
    assert again.exit_code == 1
    assert "already exists" in again.output and "--force" in again.output
    forced = invoke(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert "deactivated old certificate" in forced.output


def test_cli_reports_a_bad_architecture_by_name(moto_iot_env, tmp_path):
    result = invoke("gw-cli-2", "--site", "s", "--line", "l", "--arch", "mips", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "architecture='mips'" in result.output
