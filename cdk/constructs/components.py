"""The Greengrass components in the cloud, and the deployment that puts them on every gateway.

For each component (greengrass_components/build.py COMPONENT_PACKAGES):
- its artifact zip is built at synth (deterministically: the same sources give the same bytes),
  staged in a content-hashed folder and uploaded as a CDK file asset;
- an AWS::GreengrassV2::ComponentVersion publishes the repository's recipe at the package version
  (schemas/version.py PACKAGE_VERSION) with the asset's S3 URI (build.resolved_recipe);
- the gateways' token-exchange role may GetObject exactly that asset object (and ask its bucket's
  region, which the nucleus's S3 downloader does first).

A component version is immutable in Greengrass: a changed recipe (and every changed zip changes it,
through the asset URI) makes CloudFormation replace the ComponentVersion, which creates the same
name and version again and fails. So once a version has been deployed, a change to the component
code or recipes needs a new package version (schemas/version.py).

Then one continuous deployment (AWS::GreengrassV2::Deployment) targets the static thing group
names.GREENGRASS_GATEWAYS_THING_GROUP, which `edgeloop gateway provision --greengrass` adds every
Greengrass gateway to: a core device joining the group gets both components without anyone acting,
and a stack update that publishes a new version redeploys the group.

Why one fleet-wide group, not one per site: the stack does not know the sites (provisioning creates
the site and line groups), and the components are the same everywhere. A gateway's own context
(site, line, use case) is component configuration on the device (the nucleus config provisioning
writes), which this deployment leaves alone: it carries no configurationUpdate, and a deployment's
configuration update is a patch on the configuration the device already has (Greengrass v2 developer
guide, "Update component configurations"; nucleus KernelConfigResolver.resolveConfigurationToApply).

The base deployment and the orchestrator's rollouts do not fight: a rollout deploys to its own
cohort thing groups (edgeloop-rollout-*, cloud/fleet/delivery.py), and a core device runs the union
of the latest deployments of every group it belongs to; a new deployment replaces only the previous
deployment of the same target ("Deploy AWS IoT Greengrass components to devices": core device
deployments, component dependency resolution across thing groups). So a new base deployment keeps
the model a rollout merged under `modelUpdate`, and a rollout keeps the base components. Both name
the same versions (the package version; the stack's test checks the orchestrator's environment),
because the nucleus combines every group's version requirement for a component: two groups pinning
different versions of one component cannot resolve, and the newer deployment fails on that device.
The nucleus (aws.greengrass.Nucleus) is not in the deployment: it is the version the installer put
there, and a deployment naming it would up- or downgrade every gateway's nucleus.
aws.greengrass.TokenExchangeService comes in as the ModelRunner recipe's HARD dependency.

Greengrass v2 is offered in fewer regions than the rest of the stack uses: the ComponentVersions,
the group and the deployment carry the condition GreengrassV2Available (the region is one of
GREENGRASS_V2_REGIONS, the regions whose CloudFormation registry has these types, as cfn-lint's
region data lists them; a test keeps the two equal), so `cdk deploy` elsewhere still succeeds,
without the components. The artifacts and their read grant are there in every region.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from aws_cdk import Aws, CfnCondition, Fn, Stack
from aws_cdk import aws_greengrassv2 as greengrassv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from edgeloop.greengrass_components.build import COMPONENT_PACKAGES, resolved_recipe, write_artifact
from edgeloop.schemas import names

from .nag import allow

STAGED_PREFIX = "greengrass-artifact-"
# Regions with AWS::GreengrassV2::ComponentVersion, AWS::GreengrassV2::Deployment and
# AWS::IoT::ThingGroup (cfn-lint's per-region registry data; tests/infrastructure/test_cdk_components.py).
GREENGRASS_V2_REGIONS = (
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-5",
    "ca-central-1",
    "cn-north-1",
    "eu-central-1",
    "eu-isoe-west-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eusc-de-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "us-isob-west-1",
    "us-isof-east-1",
    "us-isof-south-1",
    "us-west-2",
)
MAX_OR_CONDITIONS = 10  # Fn::Or takes 2 to 10 conditions
# The base deployment's policies: a device that cannot apply it returns to its previous components;
# running components may defer the update briefly (the model runner finishes its batch).
BASE_DEPLOYMENT_POLICIES = greengrassv2.CfnDeployment.DeploymentPoliciesProperty(
    failure_handling_policy="ROLLBACK",
    component_update_policy=greengrassv2.CfnDeployment.DeploymentComponentUpdatePolicyProperty(
        action="NOTIFY_COMPONENTS", timeout_in_seconds=60
    ),
    configuration_validation_policy=greengrassv2.CfnDeployment.DeploymentConfigurationValidationPolicyProperty(
        timeout_in_seconds=60
    ),
)


def stage_artifact(component: str, staging_dir: Path) -> Path:
    """Build `component`'s zip under staging_dir/<prefix><content hash>/<component>.zip; an unchanged
    zip stages to the same path, and a concurrent synth that got there first wrote the same bytes."""
    staging_dir = Path(staging_dir)
    staging_dir.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".staging-", dir=staging_dir))
    try:
        zip_path = write_artifact(component, build / f"{component}.zip")
        digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()[:20]
        final = staging_dir / f"{STAGED_PREFIX}{digest}"
        if not final.is_dir():
            try:
                os.rename(build, final)
            except OSError:
                if not final.is_dir():
                    raise
        return final / f"{component}.zip"
    finally:
        shutil.rmtree(build, ignore_errors=True)


def region_in(regions: tuple[str, ...]):
    """A condition expression true in any of `regions` (nested Fn::Or: at most 10 conditions each)."""
    terms = [Fn.condition_equals(Aws.REGION, region) for region in regions]
    while len(terms) > 1:
        terms = [
            Fn.condition_or(*terms[i : i + MAX_OR_CONDITIONS])
            if len(terms[i : i + MAX_OR_CONDITIONS]) > 1
            else terms[i]
            for i in range(0, len(terms), MAX_OR_CONDITIONS)
        ]
    return terms[0]


class GreengrassComponents(Construct):
    """Both components published at `version`, readable by `artifact_reader`, deployed to the gateways' group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        version: str,
        staging_dir: Path,
        artifact_reader: iam.Role,
    ) -> None:
        super().__init__(scope, construct_id)
        self.version = version
        self.artifacts: dict[str, s3_assets.Asset] = {}
        self.component_versions: dict[str, greengrassv2.CfnComponentVersion] = {}
        for component in COMPONENT_PACKAGES:
            self._publish(component, staging_dir, artifact_reader)
        allow(
            artifact_reader,
            actions=["s3:GetBucketLocation"],
            # every file asset of a stack goes to its synthesizer's one assets bucket
            resources=[next(iter(self.artifacts.values())).bucket.bucket_arn],
            reason="the Greengrass S3 artifact downloader asks the assets bucket's region first",
        )
        self.available = CfnCondition(self, "GreengrassV2Available", expression=region_in(GREENGRASS_V2_REGIONS))
        self.thing_group = iot.CfnThingGroup(
            self,
            "GatewaysThingGroup",
            thing_group_name=names.GREENGRASS_GATEWAYS_THING_GROUP,
            thing_group_properties=iot.CfnThingGroup.ThingGroupPropertiesProperty(
                thing_group_description="edgeloop Greengrass gateways: target of the continuous base deployment "
                "of the edgeloop components (provisioning adds each gateway)"
            ),
        )
        self.base_deployment = greengrassv2.CfnDeployment(
            self,
            "BaseDeployment",
            target_arn=self.thing_group.attr_arn,
            deployment_name=f"{names.PROJECT}-base-{version}",
            components={
                component: greengrassv2.CfnDeployment.ComponentDeploymentSpecificationProperty(
                    component_version=published.attr_component_version
                )
                for component, published in self.component_versions.items()
            },
            deployment_policies=BASE_DEPLOYMENT_POLICIES,
        )
        for resource in (self.thing_group, self.base_deployment, *self.component_versions.values()):
            resource.cfn_options.condition = self.available

    def _publish(self, component: str, staging_dir: Path, reader: iam.Role) -> None:
        logical = component.rsplit(".", 1)[-1]
        asset = s3_assets.Asset(self, f"{logical}Artifact", path=str(stage_artifact(component, staging_dir)))
        # the key is a plain string (the asset's hash): the run step's folder is named after it
        uri = f"s3://{asset.s3_bucket_name}/{asset.s3_object_key}"
        recipe = resolved_recipe(component, self.version, artifact_uri=uri)
        self.artifacts[component] = asset
        self.component_versions[component] = greengrassv2.CfnComponentVersion(
            self, f"{logical}Component", inline_recipe=Stack.of(self).to_json_string(recipe)
        )
        allow(
            reader,
            actions=["s3:GetObject"],
            resources=[asset.bucket.arn_for_objects(asset.s3_object_key)],
            reason=f"the {component} artifact object only",
        )
