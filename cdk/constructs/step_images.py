"""SageMaker's XGBoost image for the stack's region: a CfnMapping generated from the SageMaker SDK.

The URIs come from sagemaker_pipelines/steps/images.py (generated from
`sagemaker.core.image_uris.retrieve` for every region the SDK's XGBoost config lists), never from a
hand table. An environment-agnostic stack looks them up with Fn::FindInMap on AWS::Region when it is
deployed; a stack whose region is known at synth gets the literal URI, and a region the SDK does not
list fails the synth there (the mapping is lazy: CDK resolves it and raises on a missing key).
"""

from __future__ import annotations

from aws_cdk import Aws, CfnMapping, Stack
from constructs import Construct

from edgeloop.sagemaker_pipelines.steps import images

STEP_IMAGE_KEY = "StepImage"
SERVING_IMAGE_KEY = "ServingImage"
# The ECR repository of the image, which the pipeline role may pull from.
REGISTRY_ACCOUNT_KEY = "RegistryAccount"
REPOSITORY_KEY = "Repository"


def image_mapping() -> dict[str, dict[str, str]]:
    """region -> step image, serving image, registry account and repository, for every region the SDK lists."""
    mapping = {}
    for region in images.regions():
        step = images.step_image_uri(region)
        mapping[region] = {
            STEP_IMAGE_KEY: step,
            SERVING_IMAGE_KEY: images.serving_image_uri(region),
            REGISTRY_ACCOUNT_KEY: images.registry_account(step),
            REPOSITORY_KEY: images.repository_name(step),
        }
    return mapping


class StepImages(Construct):
    """The step image (training and processing jobs) and the serving image a model package names."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.mapping = CfnMapping(self, "XgboostImages", mapping=image_mapping(), lazy=True)
        self.step_image_uri = self._lookup(STEP_IMAGE_KEY)
        self.serving_image_uri = self._lookup(SERVING_IMAGE_KEY)
        account, repository = self._lookup(REGISTRY_ACCOUNT_KEY), self._lookup(REPOSITORY_KEY)
        self.repository_arn = f"arn:{Aws.PARTITION}:ecr:{Aws.REGION}:{account}:repository/{repository}"

    def _lookup(self, key: str) -> str:
        return self.mapping.find_in_map(Stack.of(self).region, key)
