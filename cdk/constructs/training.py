"""Training in AWS: a Model Package Group per line, the SageMaker pipeline, its least-privilege role,
and a "data scientist" policy to run the pipeline and approve its models.

The pipeline definition is the template sagemaker_pipelines/pipeline.py generates offline and the
repository commits (sagemaker_pipelines/definitions/<use case>.json); its CloudFormation
placeholders (PLACEHOLDERS) are filled here with Fn::Sub, so the deployed definition is the
reviewed one with this stack's buckets, image, code archive and role.

No Docker, at synth or deploy: every step runs in SageMaker's managed XGBoost image, whose URI per
region comes from the SageMaker SDK through a CfnMapping (step_images.py). The step code goes up as
a file asset, sourcedir.tar.gz (sagemaker_pipelines/step_code.py, built at synth with its pinned
requirements), whose S3 URI the definition receives as CodeS3Uri, so each execution names the
exact code it ran (the asset hash is a content hash of the archive).

A use-case file (-c edgeloop:useCaseFile, constructs/config.py) goes into the code archive at
names.PACKAGED_USE_CASE_FILE, and the definition is then built at synth (sagemaker_pipelines/pipeline.py,
with the SDK) with every step's EDGELOOP_USE_CASE_FILE naming it: no committed template exists for it.

Model signing: with `edgeloop:modelSigningKeySecretArn` (cdk/constructs/config.py) the register step's
environment names that Secrets Manager secret and the pipeline role may read exactly it (the secret is
assumed to use the AWS-managed key aws/secretsmanager, which needs no kms grant); without it the
payloads go out unsigned, which the synth warns about and the ModelPayloadSigning output states.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Annotations, Aws, CfnOutput, CfnTag, Fn, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from edgeloop.sagemaker_pipelines.pipeline import definition_path
from edgeloop.sagemaker_pipelines.pipeline import definition_template as build_definition_template
from edgeloop.sagemaker_pipelines.step_code import build_archive
from edgeloop.sagemaker_pipelines.targets import TEMPLATE_PLACEHOLDERS
from edgeloop.schemas import names
from edgeloop.schemas.use_case import UseCaseConfig

from .config import (
    MODEL_SIGNING_KEY_SECRET_ARN_KEY,
    checked_signing_key_secret_arn,
    model_signing_key_secret_arn,
)
from .nag import acknowledge, allow, wildcard_findings
from .step_images import StepImages
from .storage import Storage

# Fn::Sub variables of a definition template (sagemaker_pipelines/targets.py); ${AWS::Region} is a
# pseudo parameter CloudFormation fills itself. ModelSigningKeySecretArn is "" without a signing key.
PLACEHOLDERS = tuple(
    placeholder.removeprefix("${").removesuffix("}")
    for placeholder in TEMPLATE_PLACEHOLDERS.values()
    if not placeholder.startswith("${AWS::")
)
UNSIGNED_WARNING_ID = "edgeloop:unsignedModelPayloads"

# What the steps read in the data bucket: curated samples and context (the dataset step packs,
# labels and extracts features itself), packs the metric packer already built, and reviewed labels.
DATA_READ_PREFIXES = (names.CURATED_PREFIX, names.CONTEXT_PREFIX, names.PACKS_PREFIX, names.LABEL_REVIEW_PREFIX)
# SageMaker Pipelines names the jobs it starts pipelines-<execution id>-<step>-<suffix>; a definition
# cannot choose them, so this is the narrowest job ARN pattern that lets the pipeline run.
PIPELINE_JOB_PREFIX = "pipelines-"
JOB_ACTIONS = {
    "processing-job": [
        "sagemaker:CreateProcessingJob",
        "sagemaker:DescribeProcessingJob",
        "sagemaker:StopProcessingJob",
    ],
    "training-job": ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"],
}
READ_WRITE_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
ECR_PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
LOG_ACTIONS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
SAGEMAKER_LOG_GROUPS = "/aws/sagemaker/*"  # ProcessingJobs, TrainingJobs
REGISTER_GROUP_ACTIONS = ["sagemaker:CreateModelPackageGroup", "sagemaker:DescribeModelPackageGroup"]
REGISTER_PACKAGE_ACTIONS = ["sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage"]
# Execution-level actions of a pipeline (pipeline-execution resource type).
EXECUTION_ACTIONS = [
    "sagemaker:DescribePipelineExecution",
    "sagemaker:DescribePipelineDefinitionForExecution",
    "sagemaker:ListPipelineExecutionSteps",
    "sagemaker:ListPipelineParametersForExecution",
    "sagemaker:StopPipelineExecution",
    "sagemaker:RetryPipelineExecution",
]
PIPELINE_ACTIONS = [
    "sagemaker:StartPipelineExecution",
    "sagemaker:DescribePipeline",
    "sagemaker:ListPipelineExecutions",
]
# No resource-level permissions in the Service Authorization Reference: these need Resource "*".
REGISTRY_LIST_ACTIONS = ["sagemaker:ListModelPackages", "sagemaker:ListModelPackageGroups"]
STEP_JOB_READ_ACTIONS = ["sagemaker:DescribeProcessingJob", "sagemaker:DescribeTrainingJob"]
# cdk-nag reports every Resource "*" of a role under one finding id, so one reason covers them all.
STAR_REASON = (
    "Resource '*' only for actions without resource-level permissions (Service Authorization Reference): "
    "ecr:GetAuthorizationToken (registry-wide login), cloudwatch:PutMetricData (held to SageMaker's namespaces "
    "by a condition) and sagemaker:ListModelPackages (evaluate lists a group's approved versions for the champion)"
)


# Where synth writes the step code archive by default: outside the repository (the archive is named
# by its content hash, so an unchanged archive is not rewritten).
DEFAULT_CODE_STAGING_DIR = Path(tempfile.gettempdir()) / "edgeloop-step-code"


def definition_template(use_case: str, directory: Path | None = None) -> str:
    """The committed definition template of a use case (`edgeloop pipeline definition` writes it)."""
    path = directory / f"{use_case}.json" if directory else definition_path(use_case)
    if not path.exists():
        raise FileNotFoundError(
            f"use case {use_case!r}: no pipeline definition {path}; generate it with "
            f"`edgeloop pipeline definition --use-case {use_case} --out {path}`"
        )
    return path.read_text()


def _arn(service: str, resource: str) -> str:
    return f"arn:{Aws.PARTITION}:{service}:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"


class Training(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        use_case: str,
        line_ids: Sequence[str],
        packaged_use_case: UseCaseConfig | None = None,
        definitions_dir: Path | None = None,
        signing_key_secret_arn: str | None = None,
        staging_dir: Path | None = None,
    ) -> None:
        """`signing_key_secret_arn`: the secret holding the register step's signing key; None: read
        from the context key edgeloop:modelSigningKeySecretArn; "": payloads are registered unsigned.
        `staging_dir`: where the step code archive is built (default: DEFAULT_CODE_STAGING_DIR).
        `packaged_use_case`: a use case from a file (its use_case is `use_case`), packaged in the code
        archive; the definition is then built here rather than read from `definitions_dir`."""
        super().__init__(scope, construct_id)
        self.signing_key_secret_arn = (
            model_signing_key_secret_arn(self.node.try_get_context)
            if signing_key_secret_arn is None
            else checked_signing_key_secret_arn(signing_key_secret_arn)
        )
        self.use_case = use_case
        self.pipeline_name = names.pipeline_name(use_case)
        # Every group of this use case, including those the register step creates for new lines.
        self.group_prefix = names.model_package_group_name(use_case, "")
        # Step outputs: pipeline/<use case>/<execution id>/<output>/ (see names.PIPELINE_WORK_PREFIX).
        self.work_prefix = f"{names.PIPELINE_WORK_PREFIX}/{use_case}"
        self.groups = {line_id: self._group(line_id) for line_id in line_ids}
        self.group_names = [names.model_package_group_name(use_case, line_id) for line_id in line_ids]
        self.images = StepImages(self, "Images")
        if packaged_use_case is not None and packaged_use_case.use_case != use_case:
            raise ValueError(f"packaged_use_case={packaged_use_case.use_case!r} is not use_case={use_case!r}")
        archive = build_archive(staging_dir or DEFAULT_CODE_STAGING_DIR, use_case=packaged_use_case)
        self.code = s3_assets.Asset(self, "StepCode", path=str(archive))
        self.role = iam.Role(
            self,
            "PipelineRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"edgeloop {use_case} pipeline: runs its steps' jobs and registers their models",
        )
        self._grant_data(storage)
        self._grant_models(storage.models)
        self._grant_step_runtime()
        self._grant_jobs()
        self._grant_registry()
        self._grant_signing_key()
        template = (
            definition_template(use_case, definitions_dir)
            if packaged_use_case is None
            else build_definition_template(packaged_use_case, packaged_file=True)
        )
        self.pipeline = self._pipeline(storage, template)
        self.data_scientists = self._data_scientist_policy(storage.models)

    def _group(self, line_id: str) -> sagemaker.CfnModelPackageGroup:
        return sagemaker.CfnModelPackageGroup(
            self,
            f"ModelPackageGroup-{line_id}",
            model_package_group_name=names.model_package_group_name(self.use_case, line_id),
            model_package_group_description=f"{self.use_case} models of line {line_id}",
            tags=[CfnTag(key="edgeloop:use_case", value=self.use_case), CfnTag(key="edgeloop:line_id", value=line_id)],
        )

    # --- the pipeline role -----------------------------------------------------------------------
    def _grant_data(self, storage: Storage) -> None:
        # Both buckets use SSE-S3 (storage.py), so reading and writing them needs no KMS grant.
        data = storage.data
        allow(
            self.role,
            actions=["s3:GetObject"],
            resources=[Storage.objects(data, prefix) for prefix in DATA_READ_PREFIXES],
            reason="the dataset step reads every object under the curated, context, packs and label review "
            "prefixes of the lines and dates it is given; nothing else in the data bucket",
        )
        allow(
            self.role,
            actions=READ_WRITE_ACTIONS,
            resources=[Storage.objects(data, self.work_prefix)],
            reason=f"step outputs live under {self.work_prefix}/<execution id>/<output>/ (this use case's share of "
            f"the {names.PIPELINE_WORK_PREFIX}/ prefix); execution ids are generated",
        )
        self._allow_listing(data, [*DATA_READ_PREFIXES, self.work_prefix])

    def _grant_models(self, models: s3.IBucket) -> None:
        allow(
            self.role,
            actions=READ_WRITE_ACTIONS,
            resources=[Storage.objects(models, names.MODELS_PREFIX)],
            reason=f"the register step writes models/<model id>/<version>/ payloads and manifests; evaluate reads "
            f"the champion's; only {names.MODELS_PREFIX}/ of the model bucket",
        )
        self._allow_listing(models, [names.MODELS_PREFIX])

    def _allow_listing(self, bucket: s3.IBucket, prefixes: Sequence[str]) -> None:
        """ListBucket held to the given prefixes (ListBucket's resource is the bucket, not its objects)."""
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}/*" for prefix in prefixes]}},
            )
        )

    def _grant_step_runtime(self) -> None:
        """The image, the code asset and the jobs' logs and metrics."""
        # The XGBoost repository in AWS's registry account of this region (its repository policy lets
        # any account pull; the role's own policy must allow it too).
        self.role.add_to_policy(iam.PolicyStatement(actions=ECR_PULL_ACTIONS, resources=[self.images.repository_arn]))
        allow(
            self.role,
            actions=["ecr:GetAuthorizationToken"],
            resources=["*"],
            reason=STAR_REASON,
        )
        allow(
            self.role,
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}},
            reason=STAR_REASON,
        )
        # The code archive is a processing input of type S3Prefix: SageMaker lists its key, then gets it.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[f"arn:{Aws.PARTITION}:s3:::{self.code.s3_bucket_name}/{self.code.s3_object_key}"],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[f"arn:{Aws.PARTITION}:s3:::{self.code.s3_bucket_name}"],
                conditions={"StringEquals": {"s3:prefix": self.code.s3_object_key}},
            )
        )
        allow(
            self.role,
            actions=LOG_ACTIONS,
            resources=[
                _arn("logs", f"log-group:{SAGEMAKER_LOG_GROUPS}"),
                _arn("logs", f"log-group:{SAGEMAKER_LOG_GROUPS}:log-stream:*"),
            ],
            reason="SageMaker jobs log to /aws/sagemaker/ProcessingJobs and /aws/sagemaker/TrainingJobs in streams "
            "named by job; the log groups are created on first use",
        )

    def _grant_jobs(self) -> None:
        for resource_type, actions in JOB_ACTIONS.items():
            allow(
                self.role,
                actions=[*actions, "sagemaker:AddTags"],
                resources=[_arn("sagemaker", f"{resource_type}/{PIPELINE_JOB_PREFIX}*")],
                reason="SageMaker Pipelines names each step's job pipelines-<execution id>-<step>-<suffix> and tags "
                "it with its execution; the names are generated per execution",
            )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )

    def _grant_registry(self) -> None:
        allow(
            self.role,
            actions=REGISTER_GROUP_ACTIONS,
            resources=[_arn("sagemaker", f"model-package-group/{self.group_prefix}*")],
            reason=f"the register step creates the group of a line added after deployment; only groups named "
            f"{self.group_prefix}<line>",
        )
        allow(
            self.role,
            actions=REGISTER_PACKAGE_ACTIONS,
            resources=[
                _arn("sagemaker", f"model-package-group/{self.group_prefix}*"),
                _arn("sagemaker", f"model-package/{self.group_prefix}*/*"),
            ],
            reason=f"new versions in any line's group of this use case ({self.group_prefix}<line>/<version>); "
            "versions are numbered by SageMaker",
        )
        allow(
            self.role,
            actions=["sagemaker:ListModelPackages"],
            resources=["*"],
            reason=STAR_REASON,
        )

    def _grant_signing_key(self) -> None:
        """Read access to exactly the configured secret; without one, say that payloads go unsigned."""
        arn = self.signing_key_secret_arn
        if arn:
            self.role.add_to_policy(iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[arn]))
            CfnOutput(self, "ModelPayloadSigning", value=f"signed with the Ed25519 key in {arn}")
            return
        message = (
            f"{MODEL_SIGNING_KEY_SECRET_ARN_KEY} is not set: the {self.pipeline_name} pipeline registers UNSIGNED "
            "model payloads, which gateways configured with a public key refuse"
        )
        Annotations.of(self).add_warning_v2(UNSIGNED_WARNING_ID, message)
        CfnOutput(
            self, "ModelPayloadSigning", value=f"unsigned: set the context key {MODEL_SIGNING_KEY_SECRET_ARN_KEY}"
        )

    # --- the pipeline -----------------------------------------------------------------------------
    def _pipeline(self, storage: Storage, template: str) -> sagemaker.CfnPipeline:
        variables = {
            "DataBucket": storage.data.bucket_name,
            "ModelBucket": storage.models.bucket_name,
            "StepImageUri": self.images.step_image_uri,
            "ServingImageUri": self.images.serving_image_uri,
            "CodeS3Uri": self.code.s3_object_url,
            "PipelineRoleArn": self.role.role_arn,
            "ModelSigningKeySecretArn": self.signing_key_secret_arn,
        }
        pipeline = sagemaker.CfnPipeline(
            self,
            "Pipeline",
            pipeline_name=self.pipeline_name,
            pipeline_display_name=self.pipeline_name,
            pipeline_description=f"edgeloop {self.use_case}: dataset -> train -> evaluate -> register, per line",
            role_arn=self.role.role_arn,
            pipeline_definition={"PipelineDefinitionBody": Fn.sub(template, variables)},
            tags=[CfnTag(key="edgeloop:use_case", value=self.use_case)],
        )
        # The first execution must not start before the role can run its steps.
        pipeline.node.add_dependency(self.role)
        return pipeline

    # --- the data scientist policy -----------------------------------------------------------------
    def _data_scientist_policy(self, models: s3.IBucket) -> iam.ManagedPolicy:
        stack = Stack.of(self)
        pipeline_arn = _arn("sagemaker", f"pipeline/{self.pipeline_name}")
        groups = _arn("sagemaker", f"model-package-group/{self.group_prefix}*")
        packages = _arn("sagemaker", f"model-package/{self.group_prefix}*/*")
        statements = [
            iam.PolicyStatement(sid="RunThePipeline", actions=PIPELINE_ACTIONS, resources=[pipeline_arn]),
            iam.PolicyStatement(
                sid="FollowExecutions", actions=EXECUTION_ACTIONS, resources=[f"{pipeline_arn}/execution/*"]
            ),
            iam.PolicyStatement(
                sid="InspectStepJobs",
                actions=STEP_JOB_READ_ACTIONS,
                resources=[
                    _arn("sagemaker", f"{resource_type}/{PIPELINE_JOB_PREFIX}*") for resource_type in JOB_ACTIONS
                ],
            ),
            iam.PolicyStatement(
                sid="ReadTheRegistry",
                actions=["sagemaker:DescribeModelPackageGroup", "sagemaker:DescribeModelPackage"],
                resources=[groups, packages],
            ),
            iam.PolicyStatement(sid="ListTheRegistry", actions=REGISTRY_LIST_ACTIONS, resources=["*"]),
            iam.PolicyStatement(sid="ApproveModels", actions=["sagemaker:UpdateModelPackage"], resources=[packages]),
            iam.PolicyStatement(
                sid="ReadModelManifests",
                actions=["s3:GetObject"],
                resources=[Storage.objects(models, names.MODELS_PREFIX)],
            ),
        ]
        policy = iam.ManagedPolicy(
            self,
            "DataScientistPolicy",
            description=f"Run the {self.pipeline_name} pipeline, read its model registry, approve its models",
            statements=statements,
        )
        reasons = {
            "FollowExecutions": "execution ids are generated; only executions of this one pipeline",
            "InspectStepJobs": "SageMaker Pipelines names step jobs pipelines-<execution id>-<step>-<suffix>; "
            "read-only (Describe)",
            "ReadTheRegistry": f"every line's group of this use case ({self.group_prefix}<line>) and its numbered versions",
            "ListTheRegistry": "ListModelPackages and ListModelPackageGroups have no resource type in the Service "
            "Authorization Reference",
            "ApproveModels": f"approval of any version in this use case's groups ({self.group_prefix}<line>/<version>)",
            "ReadModelManifests": f"manifests and payloads under {names.MODELS_PREFIX}/<model id>/<version>/ only",
        }
        for statement in statements:
            if statement.sid in reasons:
                for finding in wildcard_findings(stack, statement.actions, statement.resources):
                    acknowledge(policy, f"IAM5[{finding}]", reasons[statement.sid])
        return policy
