"""Every region the SageMaker SDK lists an XGBoost image for: the stack synthesizes there and resolves it.

What the region changes in the Training construct is the image lookup (cdk/constructs/step_images.py;
the ARNs use the AWS::Partition and AWS::Region pseudo parameters). So one app holds one small stack
per region with that lookup, its region known at synth (as with `cdk synth -c`/an env region), and
the whole Training construct (with Storage and cdk-nag) is synthesized once per image registry domain
(one region per partition: aws, aws-cn, aws-us-gov, the ISO partitions).
"""

from __future__ import annotations

import json

import pytest

from edgeloop.sagemaker_pipelines.steps import images

pytestmark = pytest.mark.slow


def _domain(region: str) -> str:
    return images.step_image_uri(region).split("/", 1)[0].split(f".{region}.", 1)[1]


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """region -> (step image, serving image) as the region's stack resolves them; the app synthesizes."""
    import aws_cdk as cdk

    from edgeloop.cdk.constructs.step_images import StepImages

    app = cdk.App(outdir=str(tmp_path_factory.mktemp("regions-out")))
    found = {}
    for index, region in enumerate(images.regions()):
        stack = cdk.Stack(app, f"Images{index}", env=cdk.Environment(region=region))
        step_images = StepImages(stack, "Images")
        found[region] = (stack.resolve(step_images.step_image_uri), stack.resolve(step_images.serving_image_uri))
    app.synth()
    return found


def test_the_image_table_covers_every_region_the_sdk_lists():
    image_uris = pytest.importorskip("sagemaker.core.image_uris")
    config = image_uris.config_for_framework(images.XGBOOST_FRAMEWORK)
    listed = set(config["training"]["versions"][images.XGBOOST_FRAMEWORK_VERSION]["registries"])
    assert set(images.regions()) == listed
    assert {"ap-south-2", "ca-west-1", "il-central-1", "cn-north-1", "us-gov-west-1"} <= listed


def test_every_listed_region_resolves_its_image_at_synth(resolved):
    """The table's URIs are the SDK's (tests/unit/pipelines/test_step_images.py checks every one)."""
    assert set(resolved) == set(images.regions())
    for region, (step, serving) in resolved.items():
        assert (step, serving) == (images.step_image_uri(region), images.serving_image_uri(region)), region
        assert f".dkr.ecr.{region}." in step
        assert step.endswith(f"/sagemaker-xgboost:{images.XGBOOST_FRAMEWORK_VERSION}")


def test_a_region_without_the_image_fails_the_synth_naming_it(tmp_path):
    import aws_cdk as cdk

    from edgeloop.cdk.constructs.step_images import StepImages

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Nowhere", env=cdk.Environment(region="xx-nowhere-1"))
    with pytest.raises(Exception, match="xx-nowhere-1"):
        StepImages(stack, "Images")


@pytest.fixture(scope="module")
def partition_stacks(tmp_path_factory) -> dict[str, dict]:
    """The whole Training construct (with Storage) in one region per registry domain, cdk-nag on."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from edgeloop.cdk.app import FEATURE_FLAGS
    from edgeloop.cdk.constructs.storage import Storage
    from edgeloop.cdk.constructs.training import Training

    by_domain = {}
    for region in images.regions():
        by_domain.setdefault(_domain(region), region)
    app = cdk.App(context=FEATURE_FLAGS, outdir=str(tmp_path_factory.mktemp("partitions-out")))
    staging = tmp_path_factory.mktemp("staging")
    stacks = {}
    for index, region in enumerate(sorted(by_domain.values())):
        stack = cdk.Stack(app, f"Training{index}", env=cdk.Environment(region=region))
        Training(
            stack,
            "Training",
            storage=Storage(stack, "Storage"),
            use_case="extrusion",
            line_ids=["line-1"],
            signing_key_secret_arn="",
            staging_dir=staging,
        )
        stacks[region] = stack
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    templates = {region: Template.from_stack(stack).to_json() for region, stack in stacks.items()}
    app.synth()
    return templates


def test_training_synthesizes_in_every_partition_with_the_regions_image(partition_stacks):
    assert {"cn-north-1", "us-gov-east-1"} & set(partition_stacks)
    assert len(partition_stacks) >= 3
    for region, template in partition_stacks.items():
        (pipeline,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Pipeline"]
        _, variables = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Sub"]
        assert variables["StepImageUri"] == images.step_image_uri(region), region
        assert variables["ServingImageUri"] == images.serving_image_uri(region), region
        text = json.dumps(template)
        assert "arn:aws:" not in text, f"{region}: an ARN with a fixed partition"
