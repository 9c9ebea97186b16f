"""`edgeloop gateway provision --greengrass` against moto: core policies, fleet group, nucleus config."""

from __future__ import annotations

import json
import stat

import boto3
import pytest
import yaml
from moto import mock_aws
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.provisioning import NUCLEUS_VERSION, STACK_NAME, ProvisioningError, ProvisioningRequest, provision_gateway
from edgeloop.schemas import iot_policies, names

REGION = "eu-west-1"
ROLE_ALIAS = f"{STACK_NAME}-gateway-token-exchange"
POLICY_DOCUMENT = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "greengrass:*", "Resource": "*"}]}
)
STACK_TEMPLATE = json.dumps(
    {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"GatewayRoleAlias": {"Value": ROLE_ALIAS}},
    }
)


def deploy_stack_stand_in(session: boto3.Session) -> None:
    """What provisioning reads of the CDK stack: the core policy, the role alias, the alias output, the fleet group."""
    iot = session.client("iot")
    iot.create_policy(policyName=names.GREENGRASS_CORE_POLICY, policyDocument=POLICY_DOCUMENT)
    iot.create_thing_group(thingGroupName=names.GREENGRASS_GATEWAYS_THING_GROUP)
    iot.create_role_alias(roleAlias=ROLE_ALIAS, roleArn="arn:aws:iam::123456789012:role/token-exchange")
    session.client("cloudformation").create_stack(StackName=STACK_NAME, TemplateBody=STACK_TEMPLATE)


@pytest.fixture
def session():
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        deploy_stack_stand_in(session)
        yield session


@pytest.fixture
def iot(session):
    return session.client("iot")


def request(tmp_path, **changes) -> ProvisioningRequest:
    fields = dict(
        thing_name="gw-gent-1",
        site="plant-gent",
        line_id="line-1",
        architecture="aarch64",
        runtime_version="1.2.0",
        out_dir=tmp_path / "out",
        greengrass=True,
    )
    return ProvisioningRequest.build(**{**fields, **changes})


def attached(iot, certificate_arn: str) -> set[str]:
    return {p["policyName"] for p in iot.list_attached_policies(target=certificate_arn)["policies"]}


def test_core_device_gets_the_fleet_policy_and_its_own_policy_naming_only_itself(session, iot, tmp_path):
    result = provision_gateway(request(tmp_path), session=session)
    own = iot_policies.thing_policy_name("gw-gent-1")
    assert attached(iot, result.certificate_arn) == {names.GREENGRASS_CORE_POLICY, own}
    assert names.GATEWAY_DATA_POLICY not in result.policies
    document = json.loads(iot.get_policy(policyName=own)["policyDocument"])
    arns = iot_policies.IotArns.from_arn(result.thing_arn)
    assert document == iot_policies.greengrass_thing_policy(arns, "gw-gent-1")
    assert arns.region == REGION and "${" not in json.dumps(document)


def test_two_core_devices_get_policies_that_name_only_their_own_thing(session, iot, tmp_path):
    provision_gateway(request(tmp_path), session=session)
    provision_gateway(request(tmp_path, thing_name="gw-gent-10", out_dir=tmp_path / "b"), session=session)
    doc_a = iot.get_policy(policyName=iot_policies.thing_policy_name("gw-gent-1"))["policyDocument"]
    doc_b = iot.get_policy(policyName=iot_policies.thing_policy_name("gw-gent-10"))["policyDocument"]
    assert "gw-gent-10" not in doc_a
    assert "gw-gent-1/" not in doc_b and "gw-gent-1#" not in doc_b and '/gw-gent-1"' not in doc_b


def test_core_device_joins_the_fleet_group_of_the_base_deployment_and_its_site_and_line(session, iot, tmp_path):
    provision_gateway(request(tmp_path), session=session)
    groups = {g["groupName"] for g in iot.list_thing_groups_for_thing(thingName="gw-gent-1")["thingGroups"]}
    assert groups == {
        names.GREENGRASS_GATEWAYS_THING_GROUP,
        names.site_thing_group("plant-gent"),
        names.line_thing_group("line-1"),
    }


def test_nucleus_config_is_the_manual_provisioning_init_config(session, tmp_path):
    result = provision_gateway(request(tmp_path), session=session)
    assert result.config_path == tmp_path / "out" / "config.yaml"
    config = yaml.safe_load(result.config_path.read_text())
    assert config["system"] == {
        "certificateFilePath": "/greengrass/v2/certificate.pem.crt",
        "privateKeyPath": "/greengrass/v2/private.pem.key",
        "rootCaPath": "/greengrass/v2/AmazonRootCA1.pem",
        "rootpath": "/greengrass/v2",
        "thingName": "gw-gent-1",
    }
    nucleus = config["services"]["aws.greengrass.Nucleus"]
    assert (nucleus["componentType"], nucleus["version"]) == ("NUCLEUS", NUCLEUS_VERSION)
    # moto makes up a new endpoint address on every DescribeEndpoint: check the kind, not the value
    data_endpoint = nucleus["configuration"].pop("iotDataEndpoint")
    assert data_endpoint == result.endpoint and data_endpoint.endswith(f"-ats.iot.{REGION}.amazonaws.com")
    assert nucleus["configuration"].pop("iotCredEndpoint").endswith(f".credentials.iot.{REGION}.amazonaws.com")
    assert nucleus["configuration"] == {
        "awsRegion": REGION,
        "iotRoleAlias": ROLE_ALIAS,
        "interpolateComponentConfiguration": True,
    }
    assert config["services"][names.GATEWAY_COMPONENT]["configuration"] == {
        "site": "plant-gent",
        "lineId": "line-1",
        "useCase": "extrusion",
        "runtimeVersion": "1.2.0",
    }
    assert config["services"][names.MODEL_RUNNER_COMPONENT]["configuration"] == {
        "lineId": "line-1",
        "useCase": "extrusion",
        "runtimeVersion": "1.2.0",
    }
    assert result.role_alias == ROLE_ALIAS


def test_credentials_and_the_install_script_are_written(session, tmp_path):
    result = provision_gateway(
        request(tmp_path, greengrass_root="/opt/gg/v2", nucleus_version="2.15.1"), session=session
    )
    out = tmp_path / "out"
    assert stat.S_IMODE(result.key_path.stat().st_mode) == 0o600
    assert "BEGIN CERTIFICATE" in (out / "AmazonRootCA1.pem").read_text()
    assert not (out / "gateway.json").exists()
    script = (out / "install-greengrass.sh").read_text()
    assert script.splitlines()[1:] == ["# Run on the gateway, in this folder.", "set -eu", *result.install_commands]
    assert stat.S_IMODE((out / "install-greengrass.sh").stat().st_mode) == 0o755
    assert "https://d2s8p88vqu9w66.cloudfront.net/releases/greengrass-2.15.1.zip" in script
    assert result.install_commands[-1] == (
        'sudo -E java -Droot="/opt/gg/v2" -Dlog.store=FILE -jar ./GreengrassInstaller/lib/Greengrass.jar '
        "--init-config ./config.yaml --component-default-user ggc_user:ggc_group --setup-system-service true"
    )


def test_role_alias_flag_needs_no_stack(tmp_path):
    with mock_aws():
        iot = boto3.client("iot", region_name=REGION)
        iot.create_policy(policyName=names.GREENGRASS_CORE_POLICY, policyDocument=POLICY_DOCUMENT)
        iot.create_role_alias(roleAlias="my-alias", roleArn="arn:aws:iam::123456789012:role/t")
        iot.create_thing_group(thingGroupName=names.GREENGRASS_GATEWAYS_THING_GROUP)
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        result = provision_gateway(request(tmp_path, role_alias="my-alias"), iot=iot, cloudformation=cloudformation)
        assert (
            yaml.safe_load(result.config_path.read_text())["services"]["aws.greengrass.Nucleus"]["configuration"][
                "iotRoleAlias"
            ]
            == "my-alias"
        )
        with pytest.raises(ProvisioningError, match="cannot read stack 'Edgeloop'.* --role-alias"):
            provision_gateway(request(tmp_path, thing_name="gw-2", out_dir=tmp_path / "2"), iot=iot)
        with pytest.raises(ProvisioningError, match="role alias 'nope' does not exist"):
            provision_gateway(request(tmp_path, thing_name="gw-3", out_dir=tmp_path / "3", role_alias="nope"), iot=iot)
        assert [t["thingName"] for t in iot.list_things()["things"]] == ["gw-gent-1"]


def test_force_keeps_one_policy_and_moves_it_to_the_new_certificate(session, iot, tmp_path):
    first = provision_gateway(request(tmp_path), session=session)
    second = provision_gateway(request(tmp_path, force=True), session=session)
    own = iot_policies.thing_policy_name("gw-gent-1")
    assert attached(iot, second.certificate_arn) == {names.GREENGRASS_CORE_POLICY, own}
    assert attached(iot, first.certificate_arn) == set()
    assert [v["versionId"] for v in iot.list_policy_versions(policyName=own)["policyVersions"]] == ["1"]


def test_a_failure_midway_removes_the_policy_this_run_created(session, iot, tmp_path):
    (tmp_path / "out").write_text("a file where the output directory should be")
    with pytest.raises(OSError):
        provision_gateway(request(tmp_path, force=True), session=session)
    assert iot.list_things()["things"] == []
    assert iot.list_certificates()["certificates"] == []
    assert {p["policyName"] for p in iot.list_policies()["policies"]} == {names.GREENGRASS_CORE_POLICY}


def test_core_device_names_aws_refuses_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no ':'"):
        request(tmp_path, thing_name="plant:gw-1")
    with pytest.raises(ValueError, match="greengrass_root='greengrass' must be an absolute path"):
        request(tmp_path, greengrass_root="greengrass")


def test_cli_prints_the_installer_command(session, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    args = ["--site", "plant-gent", "--line", "line-1", "--arch", "x86_64", "--out", str(tmp_path / "gw")]
    args += ["--use-case", "extrusion"]
    result = CliRunner().invoke(app, ["gateway", "provision", "--greengrass", "gw-cli-1", *args])
    assert result.exit_code == 0, result.output
    assert "provisioned gw-cli-1" in result.output
    assert iot_policies.thing_policy_name("gw-cli-1") in result.output
    assert "--init-config ./config.yaml --component-default-user ggc_user:ggc_group" in result.output
    assert f"greengrass-{NUCLEUS_VERSION}.zip" in result.output


def test_core_device_needs_the_stacks_fleet_group(tmp_path):
    """Provisioning never creates the base deployment's group (a later `cdk deploy` would then fail)."""
    with mock_aws():
        iot = boto3.client("iot", region_name=REGION)
        iot.create_policy(policyName=names.GREENGRASS_CORE_POLICY, policyDocument=POLICY_DOCUMENT)
        iot.create_role_alias(roleAlias="my-alias", roleArn="arn:aws:iam::123456789012:role/t")
        with pytest.raises(ProvisioningError, match="edgeloop-greengrass-gateways' does not exist: deploy"):
            provision_gateway(request(tmp_path, role_alias="my-alias"), iot=iot)
        assert iot.list_things()["things"] == []
        assert iot.list_thing_groups()["thingGroups"] == []
