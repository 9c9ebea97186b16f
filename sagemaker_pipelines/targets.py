"""Where a pipeline runs: buckets, step and serving images, code archive, role, region and signing-key secret.

A deployed pipeline gets them as CloudFormation Fn::Sub placeholders (the committed template, which
cdk/constructs/training.py fills); `edgeloop pipeline upsert` gets concrete values.
"""

from __future__ import annotations

from dataclasses import dataclass

from .steps import images
from .steps.signing_key import check_secret_arn

OPTIONAL_FIELDS = frozenset({"signing_key_secret_arn", "serving_image_uri"})
# CloudFormation Fn::Sub placeholders of the committed template (cdk/constructs/training.py fills them).
TEMPLATE_PLACEHOLDERS = {
    "data_bucket": "${DataBucket}",
    "model_bucket": "${ModelBucket}",
    # SageMaker's XGBoost image for the stack's region (cdk/constructs/training.py: a mapping from steps/images.py)
    "image_uri": "${StepImageUri}",
    "serving_image_uri": "${ServingImageUri}",
    "code_s3_uri": "${CodeS3Uri}",
    "role_arn": "${PipelineRoleArn}",
    "region": "${AWS::Region}",
    # the register step's signing key; CDK fills "" when none is configured (payloads then go unsigned)
    "signing_key_secret_arn": "${ModelSigningKeySecretArn}",
}
# The SDK inspects some values (a role without "/" is looked up in IAM, an input URI without s3://
# is uploaded as a local path), so a template is built from well-formed stand-ins, each a token
# found nowhere else, and the stand-ins are then replaced by the placeholders in the JSON text.
TEMPLATE_STAND_INS = {
    "data_bucket": "edgeloop-template-databucket",
    "model_bucket": "edgeloop-template-modelbucket",
    "image_uri": "edgeloop-template-stepimageuri",
    "serving_image_uri": "edgeloop-template-servingimageuri",
    "code_s3_uri": "s3://edgeloop-template-codes3uri/code/sourcedir.tar.gz",
    "role_arn": "arn:aws:iam::000000000000:role/edgeloop-template-pipelinerolearn",
    "region": "edgeloop-template-region",
    "signing_key_secret_arn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:edgeloop-template-signingkey",
}
# The SDK builds the definition with a session; a template's region is a placeholder, not a region.
_SESSION_REGION_FOR_TEMPLATES = "us-east-1"


@dataclass(frozen=True)
class PipelineTargets:
    """Where a pipeline runs: buckets, images, code archive, role and region (values or placeholders).

    `image_uri`: the image every step runs in (images.step_image_uri(region)); `code_s3_uri`: the
    step code archive (step_code.py) in S3; `serving_image_uri`: the image the register step names in
    the model package, empty: images.serving_image_uri(region)."""

    data_bucket: str
    model_bucket: str
    image_uri: str
    code_s3_uri: str
    role_arn: str
    region: str
    signing_key_secret_arn: str = ""  # empty: the register step signs nothing
    serving_image_uri: str = ""

    def __post_init__(self) -> None:
        for field, value in vars(self).items():
            if field in OPTIONAL_FIELDS:
                continue
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{field}={value!r}: the pipeline definition needs a non-empty value")
        if self.signing_key_secret_arn:
            check_secret_arn(self.signing_key_secret_arn)
        if not self.code_s3_uri.startswith("s3://"):
            raise ValueError(f"code_s3_uri={self.code_s3_uri!r} is not an s3:// URI")
        if not (self.role_arn.startswith("arn:") and ":role/" in self.role_arn):
            raise ValueError(f"role_arn={self.role_arn!r} is not an IAM role ARN (arn:...:role/NAME)")

    @property
    def serving_image(self) -> str:
        return self.serving_image_uri or images.serving_image_uri(self.region)

    @property
    def session_region(self) -> str:
        """The region the SDK's session is built in (a template's region is a placeholder)."""
        return _SESSION_REGION_FOR_TEMPLATES if self.region == TEMPLATE_STAND_INS["region"] else self.region


def template_targets() -> PipelineTargets:
    """The stand-in targets a committed template is built from."""
    return PipelineTargets(**TEMPLATE_STAND_INS)
