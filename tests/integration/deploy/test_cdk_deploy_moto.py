"""`cdk deploy` of the real app, with the pinned CDK CLI, against moto_server.

The app is synthesized as `make synth` does it, the CLI bootstraps the moto account, publishes
the assets to moto's S3 and deploys through a change set. Only the resource types in
moto_template.MOTO_LACKS are taken out first (moto's CloudFormation skips them, and a Ref to a
skipped resource breaks the stack); the test asserts that table is exactly what the template
uses and moto lacks, and that every other resource reached CREATE_COMPLETE and exists.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest
from moto_template import ACCOUNT, MOTO_LACKS, REGION, unsupported_types, without_unsupported

from edgeloop.local.moto_server import MotoServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

REPOSITORY = Path(__file__).resolve().parents[3]
CDK = REPOSITORY / "node_modules" / ".bin" / "cdk"
STACK = "Edgeloop"
CLI_TIMEOUT_S = 240
CLI_ENVIRONMENT = {  # as the Makefile exports them
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    "CDK_DISABLE_VERSION_CHECK": "1",
    "CDK_DISABLE_CLI_TELEMETRY": "true",
}
NO_ACCOUNT = {  # no credentials, no profile files, no instance metadata: synth stays offline
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
FAKE_ACCOUNT = {**NO_ACCOUNT, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _cdk(*arguments: str, endpoint: str | None = None) -> subprocess.CompletedProcess:
    """The pinned CLI; with `endpoint`, against moto_server in its fake account, else with no account
    at all (a synth would otherwise ask STS for the account: a network call)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(CLI_ENVIRONMENT, **(FAKE_ACCOUNT if endpoint else NO_ACCOUNT))
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    result = subprocess.run(
        [str(CDK), *arguments, "--no-notices"],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"cdk {' '.join(arguments)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return result


@pytest.fixture(scope="module")
def assembly(tmp_path_factory) -> Path:
    if not CDK.exists():
        pytest.fail(f"{CDK} is missing: run `make setup-cdk` (npm ci pins aws-cdk)")
    out = tmp_path_factory.mktemp("cdk.out")
    _cdk("synth", "--quiet", "--output", str(out))
    return out


@pytest.fixture(scope="module")
def deployed(assembly, tmp_path_factory):
    """The transformed assembly deployed into a fresh moto_server: (client kwargs, template, removed, CLI output)."""
    docker_images = json.loads((assembly / f"{STACK}.assets.json").read_text()).get("dockerImages")
    if docker_images:
        names = sorted(image.get("displayName", key) for key, image in docker_images.items())
        pytest.fail(f"Docker image assets {names}: publishing them needs a Docker daemon, which `cdk deploy` must not")
    template_path = assembly / f"{STACK}.template.json"
    template, removed = without_unsupported(json.loads(template_path.read_text()))
    template_path.write_text(json.dumps(template, indent=1))
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with MotoServer(log_path=log) as moto:
        endpoint = f"http://localhost:{moto.port}"  # the CLI's SDK needs a host name, not 127.0.0.1
        clients = {
            "endpoint_url": endpoint,
            "region_name": REGION,
            "aws_access_key_id": FAKE_ACCOUNT["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": FAKE_ACCOUNT["AWS_SECRET_ACCESS_KEY"],
        }
        _cdk("bootstrap", f"aws://{ACCOUNT}/{REGION}", "--app", str(assembly), endpoint=endpoint)
        deploy = _cdk("deploy", STACK, "--app", str(assembly), "--require-approval", "never", endpoint=endpoint)
        yield clients, template, removed, deploy


def test_moto_lacks_exactly_the_types_the_table_lists(assembly):
    template = json.loads((assembly / f"{STACK}.template.json").read_text())
    assert unsupported_types(template) == set(MOTO_LACKS)


def test_every_resource_moto_supports_reaches_create_complete(deployed):
    clients, template, removed, _ = deployed
    cloudformation = boto3.client("cloudformation", **clients)
    assert cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    resources = cloudformation.describe_stack_resources(StackName=STACK)["StackResources"]
    statuses = {r["LogicalResourceId"]: (r["ResourceType"], r["ResourceStatus"]) for r in resources}
    expected = {logical_id: (r["Type"], "CREATE_COMPLETE") for logical_id, r in template["Resources"].items()}
    assert statuses == expected
    assert set(removed.values()) == set(MOTO_LACKS)


def test_the_deployed_resources_exist_in_the_services(deployed):
    clients, template, _, _ = deployed
    resources = boto3.client("cloudformation", **clients).describe_stack_resources(StackName=STACK)["StackResources"]
    deployed_names: dict[str, set[str]] = {}
    for resource in resources:
        # moto leaves some physical ids empty (IoT policies): the template names those
        properties = template["Resources"][resource["LogicalResourceId"]].get("Properties", {})
        name = resource.get("PhysicalResourceId") or properties.get("PolicyName")
        deployed_names.setdefault(resource["ResourceType"], set()).add(name)
    existing = {
        "AWS::Lambda::Function": lambda: {
            f["FunctionName"] for f in _client("lambda", clients).list_functions()["Functions"]
        },
        "AWS::DynamoDB::Table": lambda: set(_client("dynamodb", clients).list_tables()["TableNames"]),
        "AWS::S3::Bucket": lambda: {b["Name"] for b in _client("s3", clients).list_buckets()["Buckets"]},
        "AWS::IoT::Policy": lambda: {p["policyName"] for p in _client("iot", clients).list_policies()["policies"]},
        "AWS::IAM::Role": lambda: {r["RoleName"] for r in _client("iam", clients).list_roles()["Roles"]},
    }
    missing = {kind: deployed_names[kind] - names() for kind, names in existing.items() if kind in deployed_names}
    assert missing == {kind: set() for kind in existing}


def test_the_cli_published_the_file_assets_to_the_bootstrap_bucket(deployed, assembly):
    clients, _, _, deploy = deployed
    assets = json.loads((assembly / f"{STACK}.assets.json").read_text())
    wanted = {}
    for asset in assets["files"].values():
        for destination in asset["destinations"].values():
            bucket = destination["bucketName"].replace("${AWS::AccountId}", ACCOUNT).replace("${AWS::Region}", REGION)
            wanted.setdefault(bucket, set()).add(destination["objectKey"])
    s3 = _client("s3", clients)
    for bucket, keys in wanted.items():
        stored = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert keys <= stored, f"not published to {bucket}: {sorted(keys - stored)}"


def _client(service: str, clients: dict):
    return boto3.client(service, **clients)


def test_the_readme_names_the_types_only_a_real_account_exercises():
    readme = (REPOSITORY / "README.md").read_text()
    assert [resource_type for resource_type in MOTO_LACKS if f"`{resource_type}`" not in readme] == []
