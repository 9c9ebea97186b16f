"""The Greengrass components the stack publishes, their artifacts, and the base deployment.

One version everywhere: the recipes (their placeholders filled by the build), the ModelRunner's range
on the Gateway, the ComponentVersions and the base Deployment in the template, and the version the
orchestrator's rollouts deploy (its environment) are all the package version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgeloop import __version__ as PACKAGE_VERSION
from edgeloop.greengrass_components.build import COMPONENT_PACKAGES, resolved_recipe, write_artifact
from edgeloop.schemas import names

pytestmark = pytest.mark.slow

ACCOUNT, REGION = "123456789012", "eu-west-1"
ROLLOUT_FUNCTIONS = ("orchestrator", "status_intake", "wave_controller")


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    from aws_cdk.assertions import Template

    from edgeloop.cdk.app import build_app

    outdir = tmp_path_factory.mktemp("cdk-out")
    # built right before the synth, so a concurrent edit of the sources is unlikely to come between
    expected = tmp_path_factory.mktemp("expected")
    zips = {c: write_artifact(c, expected / f"{c}.zip").read_bytes() for c in COMPONENT_PACKAGES}
    app, stack = build_app(outdir=str(outdir), staging_dir=tmp_path_factory.mktemp("staging"))
    template = Template.from_stack(stack).to_json()  # raises on an unacknowledged cdk-nag finding
    app.synth()
    return template, outdir, zips


@pytest.fixture(scope="module")
def resources(synthesized):
    return synthesized[0]["Resources"]


def of_type(resources: dict, cfn_type: str) -> dict:
    return {logical_id: r["Properties"] for logical_id, r in resources.items() if r["Type"] == cfn_type}


def render(node):
    """A CloudFormation value as it deploys in ACCOUNT/REGION (the intrinsics this stack uses here)."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and "Fn::Join" in node:
        delimiter, items = node["Fn::Join"]
        return delimiter.join(render(item) for item in items)
    if isinstance(node, dict) and "Fn::Sub" in node:
        return node["Fn::Sub"].replace("${AWS::AccountId}", ACCOUNT).replace("${AWS::Region}", REGION)
    if node == {"Ref": "AWS::Partition"}:
        return "aws"
    raise AssertionError(f"cannot render {node!r}")


@pytest.fixture(scope="module")
def published(resources) -> dict[str, tuple[str, dict]]:
    """component name -> (logical id, its inline recipe as deployed)"""
    found = {}
    for logical_id, props in of_type(resources, "AWS::GreengrassV2::ComponentVersion").items():
        recipe = json.loads(render(props["InlineRecipe"]))
        found[recipe["ComponentName"]] = (logical_id, recipe)
    return found


@pytest.fixture(scope="module")
def file_assets(synthesized) -> dict[str, Path]:
    """S3 object key -> the file the cloud assembly uploads there."""
    outdir = synthesized[1]
    manifest = json.loads(next(outdir.glob("*.assets.json")).read_text())
    found = {}
    for asset in manifest["files"].values():
        for destination in asset["destinations"].values():
            found[destination["objectKey"]] = outdir / asset["source"]["path"]
    return found


def artifact_key(recipe: dict) -> str:
    (uri,) = {a["URI"] for m in recipe["Manifests"] for a in m["Artifacts"]}
    match = re.fullmatch(rf"s3://cdk-[a-z0-9]+-assets-{ACCOUNT}-{REGION}/([0-9a-f]{{64}}\.zip)", uri)
    assert match, uri
    return match.group(1)


def test_two_component_versions_are_the_repository_recipes_at_the_package_version(published):
    assert set(published) == set(COMPONENT_PACKAGES) == {names.GATEWAY_COMPONENT, names.MODEL_RUNNER_COMPONENT}
    for component, (_logical_id, recipe) in published.items():
        (uri,) = {a["URI"] for m in recipe["Manifests"] for a in m["Artifacts"]}
        assert recipe == resolved_recipe(component, PACKAGE_VERSION, artifact_uri=uri)
        assert recipe["ComponentVersion"] == PACKAGE_VERSION


def test_artifact_uris_are_the_assets_holding_the_built_zips(synthesized, published, file_assets):
    for component, (_logical_id, recipe) in published.items():
        key = artifact_key(recipe)
        assert key in file_assets, f"{component}: {key} is not an asset of the cloud assembly"
        assert file_assets[key].read_bytes() == synthesized[2][component]  # build.write_artifact's zip
        for manifest in recipe["Manifests"]:
            # the nucleus unzips <hash>.zip into <decompressedPath>/<hash>: the run step reads there
            assert (
                f"PYTHONPATH={{artifacts:decompressedPath}}/{key[: -len('.zip')]}"
                in manifest["Lifecycle"]["run"]["Script"]
            )


def test_base_deployment_targets_the_gateways_group_with_both_published_versions(resources, published):
    groups = of_type(resources, "AWS::IoT::ThingGroup")
    ((group_id, group),) = groups.items()
    assert group["ThingGroupName"] == names.GREENGRASS_GATEWAYS_THING_GROUP
    ((_deployment_id, deployment),) = of_type(resources, "AWS::GreengrassV2::Deployment").items()
    assert deployment["TargetArn"] == {"Fn::GetAtt": [group_id, "Arn"]}
    assert deployment["Components"] == {
        component: {"ComponentVersion": {"Fn::GetAtt": [logical_id, "ComponentVersion"]}}
        for component, (logical_id, _recipe) in published.items()
    }
    # no configurationUpdate: a device keeps its own context and the model a rollout merged
    assert all(set(spec) == {"ComponentVersion"} for spec in deployment["Components"].values())
    assert deployment["DeploymentPolicies"]["FailureHandlingPolicy"] == "ROLLBACK"


def _role_statements(resources: dict, role_fragment: str) -> list[dict]:
    ((role_id, _role),) = {k: r for k, r in of_type(resources, "AWS::IAM::Role").items() if role_fragment in k}.items()
    statements = []
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy.get("Roles", []):
            statements += policy["PolicyDocument"]["Statement"]
    return statements


def test_token_exchange_role_reads_exactly_the_artifact_objects_of_the_assets_bucket(resources, published):
    statements = _role_statements(resources, "GatewayTokenExchangeRole")
    on_assets = []
    for statement in statements:
        targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for target in targets:
            arn = "" if "Fn::GetAtt" in json.dumps(target) else render(target)  # GetAtt: the stack's own buckets
            if "-assets-" in arn:
                on_assets.append((statement["Action"], arn))
    bucket_arn = f"arn:aws:s3:::cdk-hnb659fds-assets-{ACCOUNT}-{REGION}"
    expected_objects = {f"{bucket_arn}/{artifact_key(recipe)}" for _id, recipe in published.values()}
    assert {arn for action, arn in on_assets if action == "s3:GetObject"} == expected_objects
    assert {(action, arn) for action, arn in on_assets if action != "s3:GetObject"} == {
        ("s3:GetBucketLocation", bucket_arn)
    }


def _satisfies(version: str, requirement: str) -> bool:
    key = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    checks = {">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b}
    return all(checks[op](key(version), key(bound)) for op, bound in re.findall(r"(>=|<=|<|>)(\S+)", requirement))


def test_recipes_ranges_template_and_orchestrator_agree_on_one_version(synthesized, resources, published):
    versions = {recipe["ComponentVersion"] for _id, recipe in published.values()}
    assert versions == {PACKAGE_VERSION}
    runner = published[names.MODEL_RUNNER_COMPONENT][1]
    gateway_range = runner["ComponentDependencies"][names.GATEWAY_COMPONENT]["VersionRequirement"]
    assert _satisfies(published[names.GATEWAY_COMPONENT][1]["ComponentVersion"], gateway_range), gateway_range
    rollout_envs = [
        props["Environment"]["Variables"]
        for props in of_type(resources, "AWS::Lambda::Function").values()
        if names.GATEWAY_COMPONENT_VERSION_ENV in props.get("Environment", {}).get("Variables", {})
    ]
    assert set(ROLLOUT_FUNCTIONS) <= {env["POWERTOOLS_SERVICE_NAME"] for env in rollout_envs}
    for env in rollout_envs:
        assert env[names.GATEWAY_COMPONENT_VERSION_ENV] == PACKAGE_VERSION
        assert env[names.MODEL_RUNNER_COMPONENT_VERSION_ENV] == PACKAGE_VERSION
    outputs = synthesized[0]["Outputs"]
    assert outputs["GreengrassComponentVersion"]["Value"] == PACKAGE_VERSION
    assert outputs["GreengrassGatewaysThingGroupName"]["Value"] == names.GREENGRASS_GATEWAYS_THING_GROUP


def test_package_metadata_is_the_version_constant():
    """pyproject.toml reads schemas/version.py; a stale install would publish another version."""
    from importlib.metadata import version

    assert version("edgeloop") == PACKAGE_VERSION


def test_artifacts_stage_to_the_same_content_hashed_path(tmp_path):
    from edgeloop.cdk.constructs.components import stage_artifact

    first = stage_artifact(names.GATEWAY_COMPONENT, tmp_path)
    again = stage_artifact(names.GATEWAY_COMPONENT, tmp_path)
    assert first == again and first.name == f"{names.GATEWAY_COMPONENT}.zip"
    assert [p.name for p in tmp_path.iterdir()] == [first.parent.name]


def test_greengrass_resources_exist_only_where_greengrass_v2_is_offered(synthesized, resources):
    """cfn-lint's per-region registry data: the regions with all three resource types."""
    import cfnlint

    from edgeloop.cdk.constructs.components import GREENGRASS_V2_REGIONS

    kinds = ("AWS::GreengrassV2::ComponentVersion", "AWS::GreengrassV2::Deployment", "AWS::IoT::ThingGroup")
    offered = set()
    for path in (Path(cfnlint.__file__).parent / "data" / "schemas" / "providers").glob("*.json"):
        if all(kind in json.loads(path.read_text()) for kind in kinds):
            offered.add(path.stem)
    assert set(GREENGRASS_V2_REGIONS) == offered
    conditional = {logical_id: r.get("Condition") for logical_id, r in resources.items() if r["Type"] in kinds}
    assert len(conditional) == 4 and len(set(conditional.values())) == 1
    (condition,) = set(conditional.values())
    assert (
        set(re.findall(r'"AWS::Region"\}, "([a-z0-9-]+)"', json.dumps(synthesized[0]["Conditions"][condition])))
        == offered
    )
