"""The SageMaker Pipeline of a use case: dataset -> train -> evaluate -> (passed?) register | fail.

Every step runs one of this repository's step modules (`python -m edgeloop.sagemaker_pipelines.steps.<step>`)
in the step image, with the same arguments `edgeloop pipeline run-local` uses (Train: as hyperparameters
its container entry turns back into those flags), so the cloud and the local run differ only in where
files live.

Train is a TrainingStep, the others ProcessingSteps (SDK 3.27):
- Train: a `ModelTrainer` with the step image as a bring-your-own training image and no `SourceCode`
  (a `SourceCode` would make the SDK upload its driver bundle to a staging bucket while the definition
  is built). SageMaker then runs the image as `<image> train`; the image's `train` on PATH
  (sagemaker_pipelines/container/train) runs the train step on /opt/ml: channel "train" is the Dataset
  step's train output, the hyperparameters (use-case, candidates-per-template, seed) come from
  /opt/ml/input/config/hyperparameters.json, and /opt/ml/model (one directory per line) becomes the
  job's model.tar.gz, which Evaluate and Register take from ModelArtifacts.S3ModelArtifacts.
  A training job is what SageMaker tracks as training (lineage, model artifacts, the console's
  training view), and the instance type is the TrainingInstanceType parameter.
- Dataset, Evaluate: processing jobs run the image with our entrypoint and arguments, upload nothing,
  and are what `run-local` mirrors.
- Register: `ModelStep(ModelBuilder.register(..., customer_metadata_properties=...))` only creates
  a model package from existing artifacts. Our registration first exports and parity-checks the
  weight-only tiers, signs and uploads them, writes the manifest and creates the line's Model
  Package Group if missing; those results (sha256s, tiers, min runtimes) exist only after that code
  has run, so the step that computes them registers them (register.py's main).

The definition is built offline: region and SDK config are set before the SDK is imported, role
validation and telemetry are off, the boto3 session has static dummy credentials (no credential
lookup) and every S3 location is explicit (the SDK uploads nothing and asks S3 nothing).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeloop.cloud.settings import temporary_environment
from edgeloop.schemas import names
from edgeloop.schemas.use_case import UseCaseConfig

DEFINITIONS_DIR = Path(__file__).resolve().parent / "definitions"

# CloudFormation Fn::Sub placeholders of the committed template (cdk/constructs/training.py fills them).
TEMPLATE_PLACEHOLDERS = {
    "data_bucket": "${DataBucket}",
    "model_bucket": "${ModelBucket}",
    "image_uri": "${StepImageUri}",
    "code_s3_uri": "${CodeS3Uri}",
    "role_arn": "${PipelineRoleArn}",
    "region": "${AWS::Region}",
    # the register step's signing key; CDK fills "" when none is configured (payloads then go unsigned)
    "signing_key_secret_arn": "${ModelSigningKeySecretArn}",
}
# The SDK inspects some values (a role without "/" is looked up in IAM, an input URI without s3://
# is uploaded as a local path), so a template is built from well-formed stand-ins, each a token
# found nowhere else, and the stand-ins are then replaced by the placeholders in the JSON text.
_TEMPLATE_STAND_INS = {
    "data_bucket": "edgeloop-template-databucket",
    "model_bucket": "edgeloop-template-modelbucket",
    "image_uri": "edgeloop-template-stepimageuri",
    "code_s3_uri": "s3://edgeloop-template-codes3uri/code",
    "role_arn": "arn:aws:iam::000000000000:role/edgeloop-template-pipelinerolearn",
    "region": "edgeloop-template-region",
    "signing_key_secret_arn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:edgeloop-template-signingkey",
}
# A complete Secrets Manager secret ARN, with the 6-character suffix AWS appends to the name: the
# pipeline role may read exactly this ARN (cdk/constructs/training.py), and the register step reads it.
SECRET_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$")

STEP_MODULE_PREFIX = "edgeloop.sagemaker_pipelines.steps."
PROCESSING_ROOT = "/opt/ml/processing"
# The code archive is mounted read-only beside the step's inputs: the image already contains the
# installed package (sagemaker_pipelines/Dockerfile); the mount records in every job's inputs
# exactly which code snapshot the pipeline was deployed with (lineage), at no cost.
CODE_DIR = f"{PROCESSING_ROOT}/input/code"

DEFAULT_PROCESSING_INSTANCE_TYPE = "ml.m5.large"
DEFAULT_TRAINING_INSTANCE_TYPE = "ml.m5.xlarge"
# The training job's input channel of the examples: /opt/ml/input/data/train (container/train reads it).
TRAIN_CHANNEL = "train"
# A search over every template on a year of one line's data takes well under this; a job that hangs stops.
TRAINING_MAX_RUNTIME_S = 4 * 3600
# The SDK builds the definition with a session; a template's region is a placeholder, not a region.
_SESSION_REGION_FOR_TEMPLATES = "us-east-1"

# Step names: the CLI, the tests and the console show them.
DATASET_STEP = "Dataset"
TRAIN_STEP = "Train"
EVALUATE_STEP = "Evaluate"
CHECK_STEP = "CheckEvaluation"
REGISTER_STEP = "Register"
FAIL_STEP = "ValidationFailed"
EVALUATION_PROPERTY_FILE = "EvaluationReport"
EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class PipelineTargets:
    """Where a pipeline runs: buckets, image, code archive, role and region (values or placeholders)."""

    data_bucket: str
    model_bucket: str
    image_uri: str
    code_s3_uri: str
    role_arn: str
    region: str
    signing_key_secret_arn: str = ""  # empty: the register step signs nothing

    def __post_init__(self) -> None:
        for field, value in vars(self).items():
            if field == "signing_key_secret_arn":
                continue
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{field}={value!r}: the pipeline definition needs a non-empty value")
        if self.signing_key_secret_arn and not SECRET_ARN_PATTERN.match(self.signing_key_secret_arn):
            raise ValueError(
                f"signing_key_secret_arn={self.signing_key_secret_arn!r} is not a Secrets Manager secret ARN "
                "(arn:aws:secretsmanager:<region>:<account>:secret:<name>-<suffix>)"
            )
        if not self.code_s3_uri.startswith("s3://"):
            raise ValueError(f"code_s3_uri={self.code_s3_uri!r} is not an s3:// URI")
        if not (self.role_arn.startswith("arn:") and ":role/" in self.role_arn):
            raise ValueError(f"role_arn={self.role_arn!r} is not an IAM role ARN (arn:...:role/NAME)")


def pipeline_name(use_case: UseCaseConfig | str) -> str:
    return names.pipeline_name(use_case if isinstance(use_case, str) else use_case.use_case)


def build_definition(
    use_case: UseCaseConfig,
    *,
    data_bucket: str,
    model_bucket: str,
    image_uri: str,
    code_s3_uri: str,
    role_arn: str,
    region: str,
    signing_key_secret_arn: str = "",
) -> str:
    """The pipeline definition JSON for one use case; byte-identical for identical arguments.

    `signing_key_secret_arn`: the Secrets Manager secret holding the register step's Ed25519 signing
    key (its ARN goes into that step's environment); empty: registered payloads are unsigned."""
    targets = PipelineTargets(
        data_bucket=data_bucket,
        model_bucket=model_bucket,
        image_uri=image_uri,
        code_s3_uri=code_s3_uri,
        role_arn=role_arn,
        region=region,
        signing_key_secret_arn=signing_key_secret_arn,
    )
    with offline_sagemaker(_session_region(region)), _quiet_sdk():
        raw = _build_pipeline(use_case, targets).definition()
    # Key order is meaningless in the definition; sorting it makes the output stable and diffable.
    return json.dumps(json.loads(raw), indent=2, sort_keys=True) + "\n"


def definition_template(use_case: UseCaseConfig) -> str:
    """The definition with CloudFormation Fn::Sub placeholders: what is committed and deployed."""
    text = build_definition(use_case, **_TEMPLATE_STAND_INS)
    for field, stand_in in _TEMPLATE_STAND_INS.items():
        text = text.replace(stand_in, TEMPLATE_PLACEHOLDERS[field])
    return text


def definition_path(use_case: UseCaseConfig | str) -> Path:
    name = use_case if isinstance(use_case, str) else use_case.use_case
    return DEFINITIONS_DIR / f"{name}.json"


def _session_region(region: str) -> str:
    return _SESSION_REGION_FOR_TEMPLATES if region == _TEMPLATE_STAND_INS["region"] else region


_SDK_CONFIG = """\
SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


@contextmanager
def offline_sagemaker(region: str) -> Iterator[None]:
    """Environment under which the SageMaker SDK builds definitions without touching the network or ~.

    The SDK reads its defaults config (which carries the telemetry opt-out) from the files these
    variables name; a temp dir keeps it out of the user's home. The previous environment comes back
    afterwards, so a caller's own SageMaker setup is left as it was.
    """
    with tempfile.TemporaryDirectory(prefix="edgeloop-sagemaker-") as config_dir:
        config_file = Path(config_dir) / "config.yaml"
        config_file.write_text(_SDK_CONFIG)
        overrides = {
            "AWS_DEFAULT_REGION": region,
            "SAGEMAKER_VALIDATE_ROLE": "false",
            # Importing sagemaker.mlops creates a boto3 client at module level; without credentials
            # in the environment botocore would ask the EC2 metadata service for them.
            "AWS_EC2_METADATA_DISABLED": "true",
            "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config_file),
            "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(config_file),
        }
        with temporary_environment(overrides):
            yield


@contextmanager
def _quiet_sdk() -> Iterator[None]:
    """Silence the SDK's chatter about this build (config file found, no job started, job names
    dropped from the definition): expected here, and noise on a CLI's stderr."""
    import logging
    import warnings

    import sagemaker.mlops.workflow.pipeline  # noqa: F401  (the import sets up the SDK's loggers)

    sdk_logger = logging.getLogger("sagemaker")
    loggers = [
        sdk_logger,
        *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("sagemaker.")),
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _schema_checked_once():
            warnings.filterwarnings("ignore", message="Running within a PipelineSession")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextmanager
def _schema_checked_once() -> Iterator[None]:
    """`jsonschema.validate` with the schema itself checked once, not on every call.

    The SDK validates its defaults config (our telemetry opt-out) ~90 times per definition, and each
    `jsonschema.validate` call first re-checks the SDK's large config schema against the meta-schema:
    40 s of a build on a busy 2-core machine. Instances are still validated on every call, with the
    same validator class and the same best-match error as `jsonschema.validate`.
    """
    import jsonschema
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    original = jsonschema.validate
    validators: dict[int, tuple[object, object]] = {}  # id(schema) -> (schema, validator); schema kept alive

    def validate(instance, schema, cls=None, *args, **kwargs):
        if cls is not None or args or kwargs:
            return original(instance, schema, cls, *args, **kwargs)
        entry = validators.get(id(schema))
        if entry is None or entry[0] is not schema:
            validator_class = validator_for(schema)
            validator_class.check_schema(schema)
            entry = validators[id(schema)] = (schema, validator_class(schema))
        error = best_match(entry[1].iter_errors(instance))
        if error is not None:
            raise error

    jsonschema.validate = validate
    try:
        yield
    finally:
        jsonschema.validate = original


def _build_pipeline(use_case: UseCaseConfig, targets: PipelineTargets):
    """The SDK Pipeline object. Imports the SDK (seconds): call only inside offline_sagemaker()."""
    from sagemaker.mlops.workflow.pipeline import Pipeline

    parameters = _Parameters.create(use_case)
    builder = _StepBuilder(use_case, targets, parameters)
    dataset = builder.dataset_step()
    train = builder.train_step(dataset)
    evaluate, report = builder.evaluate_step(dataset, train)
    register = builder.register_step(dataset, train, evaluate)
    check = builder.check_step(evaluate, report, register)
    return Pipeline(
        name=pipeline_name(use_case),
        parameters=parameters.all,
        steps=[dataset, train, evaluate, check],
        sagemaker_session=builder.session,
        # No experiment/trial bookkeeping: the pipeline role would need experiment permissions for it.
        pipeline_experiment_config=None,
    )


@dataclass(frozen=True)
class _Parameters:
    line_id: object
    start_date: object
    end_date: object
    processing_instance_type: object
    training_instance_type: object
    candidates_per_template: object
    code_version: object
    model_version: object

    @classmethod
    def create(cls, use_case: UseCaseConfig) -> _Parameters:
        from sagemaker.core.workflow.parameters import ParameterInteger, ParameterString

        return cls(
            line_id=ParameterString("LineId"),
            # ISO dates, both inclusive; empty: from the earliest / to the latest data (dataset.py)
            start_date=ParameterString("StartDate", ""),
            end_date=ParameterString("EndDate", ""),
            processing_instance_type=ParameterString("ProcessingInstanceType", DEFAULT_PROCESSING_INSTANCE_TYPE),
            training_instance_type=ParameterString("TrainingInstanceType", DEFAULT_TRAINING_INSTANCE_TYPE),
            candidates_per_template=ParameterInteger(
                "CandidatesPerTemplate", use_case.training.candidates_per_template
            ),
            # Empty: register.py records the step image's package version.
            code_version=ParameterString("CodeVersion", ""),
            # MAJOR.MINOR.PATCH of the registered model; empty: the next patch in the line's group.
            model_version=ParameterString("ModelVersion", ""),
        )

    @property
    def all(self) -> list:
        return list(vars(self).values())


class _StepBuilder:
    """One step per step module, wired by S3 outputs under the execution's work prefix."""

    def __init__(self, use_case: UseCaseConfig, targets: PipelineTargets, parameters: _Parameters) -> None:
        import boto3
        from sagemaker.core.workflow.pipeline_context import PipelineSession

        self.use_case = use_case
        self.targets = targets
        self.parameters = parameters
        # Static dummy credentials: nothing is signed or sent while building; this only stops botocore
        # from looking for credentials (files, IMDS) at all.
        boto_session = boto3.Session(
            aws_access_key_id="offline-definition",
            aws_secret_access_key="offline-definition",
            region_name=_session_region(targets.region),
        )
        self.session = PipelineSession(boto_session=boto_session, default_bucket=targets.data_bucket)

    # --- steps -----------------------------------------------------------------------------------
    def dataset_step(self):
        from sagemaker.mlops.workflow.steps import ProcessingStep

        p = self.parameters
        out = f"{PROCESSING_ROOT}/output"
        step_args = self._processor("dataset", p.processing_instance_type).run(
            inputs=[self._code_input()],
            outputs=[self._output(name, f"{out}/{name}") for name in ("train", "reference", "dataset")],
            arguments=_argv(
                {
                    "--data-bucket": self.targets.data_bucket,
                    "--line-id": p.line_id,
                    "--start": p.start_date,
                    "--end": p.end_date,
                    "--use-case": self.use_case.use_case,
                    "--output": out,
                }
            ),
        )
        return ProcessingStep(DATASET_STEP, step_args=step_args, description="examples of one line and date range")

    def train_step(self, dataset):
        from sagemaker.core.training.configs import Compute, InputData, OutputDataConfig, StoppingCondition
        from sagemaker.core.workflow.functions import Join
        from sagemaker.mlops.workflow.steps import TrainingStep
        from sagemaker.train import ModelTrainer

        p = self.parameters
        trainer = ModelTrainer(
            training_image=self.targets.image_uri,  # no source_code: SageMaker runs `<image> train`
            role=self.targets.role_arn,
            base_job_name=f"{pipeline_name(self.use_case)}-train",
            compute=Compute(instance_type=p.training_instance_type, instance_count=1),
            stopping_condition=StoppingCondition(max_runtime_in_seconds=TRAINING_MAX_RUNTIME_S),
            # SageMaker writes <output path>/<job name>/output/model.tar.gz: under this execution's outputs.
            output_data_config=OutputDataConfig(s3_output_path=self._work_uri("model"), compression_type="GZIP"),
            hyperparameters={
                "use-case": self.use_case.use_case,
                # Hyperparameters are strings; Join renders the integer parameter as one.
                "candidates-per-template": Join(on="", values=[p.candidates_per_template]),
                "seed": str(self.use_case.training.seed),
            },
            environment=self._environment(),
            sagemaker_session=self.session,
        )
        step_args = trainer.train(
            input_data_config=[
                InputData(channel_name=TRAIN_CHANNEL, data_source=_output_uri(dataset, "train")),
                # The code archive, as for the processing steps: lineage only, the image has the code.
                InputData(channel_name="code", data_source=self.targets.code_s3_uri),
            ]
        )
        return TrainingStep(
            TRAIN_STEP, step_args=step_args, description="randomized search over the templates, per line"
        )

    def evaluate_step(self, dataset, train):
        from sagemaker.core.workflow.properties import PropertyFile
        from sagemaker.mlops.workflow.steps import ProcessingStep

        p = self.parameters
        model_dir, reference_dir, dataset_dir = _input_dirs("model", "reference", "dataset")
        evaluation_dir = f"{PROCESSING_ROOT}/evaluation"
        step_args = self._processor("evaluate", p.processing_instance_type).run(
            inputs=[
                self._code_input(),
                self._input("model", _model_artifacts_uri(train), model_dir),
                self._input("reference", _output_uri(dataset, "reference"), reference_dir),
                self._input("dataset", _output_uri(dataset, "dataset"), dataset_dir),
            ],
            outputs=[self._output("evaluation", evaluation_dir)],
            arguments=_argv(
                {
                    "--model": model_dir,
                    "--reference": reference_dir,
                    "--dataset": dataset_dir,
                    "--use-case": self.use_case.use_case,
                    "--model-bucket": self.targets.model_bucket,
                    "--output": evaluation_dir,
                }
            ),
        )
        report = PropertyFile(name=EVALUATION_PROPERTY_FILE, output_name="evaluation", path=EVALUATION_FILE)
        step = ProcessingStep(
            EVALUATE_STEP,
            step_args=step_args,
            property_files=[report],
            description="candidate vs champion on the reference data, scored by the device scorer",
        )
        return step, report

    def register_step(self, dataset, train, evaluate):
        from sagemaker.mlops.workflow.steps import ProcessingStep

        p = self.parameters
        model_dir, dataset_dir, evaluation_dir = _input_dirs("model", "dataset", "evaluation")
        # Only this step signs, so only its environment names the key's secret (nothing else reads it).
        signing = {names.MODEL_SIGNING_KEY_SECRET_ARN_ENV: self.targets.signing_key_secret_arn}
        step_args = self._processor(
            "register", p.processing_instance_type, extra_env=signing if self.targets.signing_key_secret_arn else None
        ).run(
            inputs=[
                self._code_input(),
                self._input("model", _model_artifacts_uri(train), model_dir),
                self._input("dataset", _output_uri(dataset, "dataset"), dataset_dir),
                self._input("evaluation", _output_uri(evaluate, "evaluation"), evaluation_dir),
            ],
            arguments=_argv(
                {
                    "--trained": model_dir,
                    "--model-bucket": self.targets.model_bucket,
                    "--use-case": self.use_case.use_case,
                    "--version": p.model_version,
                    "--dataset": dataset_dir,
                    "--evaluation": evaluation_dir,
                    "--code-version": p.code_version,
                }
            ),
        )
        return ProcessingStep(
            REGISTER_STEP,
            step_args=step_args,
            description="export weight-only tiers, upload, register in the line's Model Package Group",
        )

    def check_step(self, evaluate, report, register):
        from sagemaker.core.workflow.conditions import ConditionEquals
        from sagemaker.core.workflow.functions import Join, JsonGet
        from sagemaker.mlops.workflow.condition_step import ConditionStep
        from sagemaker.mlops.workflow.fail_step import FailStep

        def from_report(path: str):
            return JsonGet(step_name=evaluate.name, property_file=report, json_path=path)

        fail = FailStep(
            FAIL_STEP,
            error_message=Join(
                on="",
                values=["candidate for line ", self.parameters.line_id, " failed validation: ", from_report("reason")],
            ),
        )
        return ConditionStep(
            CHECK_STEP,
            conditions=[ConditionEquals(left=from_report("passed"), right=True)],
            if_steps=[register],
            else_steps=[fail],
        )

    # --- building blocks -------------------------------------------------------------------------
    def _processor(self, step_module: str, instance_type, extra_env: dict[str, str] | None = None):
        from sagemaker.core.processing import Processor

        return Processor(
            role=self.targets.role_arn,
            image_uri=self.targets.image_uri,
            instance_count=1,
            instance_type=instance_type,
            entrypoint=["python", "-m", STEP_MODULE_PREFIX + step_module],
            env={**self._environment(), **(extra_env or {})},
            base_job_name=f"{pipeline_name(self.use_case)}-{step_module}",
            sagemaker_session=self.session,
        )

    def _environment(self) -> dict[str, str]:
        # boto3 inside the step finds its region and the buckets the same way the Lambdas do.
        return {
            "AWS_DEFAULT_REGION": self.targets.region,
            names.DATA_BUCKET_ENV: self.targets.data_bucket,
            names.MODEL_BUCKET_ENV: self.targets.model_bucket,
            names.USE_CASE_ENV: self.use_case.use_case,
        }

    def _code_input(self):
        return self._input("code", self.targets.code_s3_uri, CODE_DIR)

    @staticmethod
    def _input(name: str, s3_uri, local_path: str):
        from sagemaker.core.shapes import ProcessingInput, ProcessingS3Input

        return ProcessingInput(
            input_name=name,
            s3_input=ProcessingS3Input(
                s3_uri=s3_uri, local_path=local_path, s3_data_type="S3Prefix", s3_input_mode="File"
            ),
        )

    def _output(self, name: str, local_path: str):
        from sagemaker.core.shapes import ProcessingOutput, ProcessingS3Output

        return ProcessingOutput(
            output_name=name,
            s3_output=ProcessingS3Output(s3_uri=self._work_uri(name), local_path=local_path, s3_upload_mode="EndOfJob"),
        )

    def _work_uri(self, output_name: str):
        """s3://<data bucket>/pipeline/<use case>/<execution id>/<output>: one place per execution."""
        from sagemaker.core.workflow.execution_variables import ExecutionVariables
        from sagemaker.core.workflow.functions import Join

        return Join(
            on="/",
            values=[
                f"s3://{self.targets.data_bucket}",
                names.PIPELINE_WORK_PREFIX,
                self.use_case.use_case,
                ExecutionVariables.PIPELINE_EXECUTION_ID,
                output_name,
            ],
        )


def _argv(flags: dict) -> list:
    """Container arguments from flag -> value, in order."""
    return [item for flag, value in flags.items() for item in (flag, value)]


def _output_uri(step, output_name: str):
    return step.properties.ProcessingOutputConfig.Outputs[output_name].S3Output.S3Uri


def _model_artifacts_uri(train_step):
    """The training job's model.tar.gz; as a processing input it lands as <local path>/model.tar.gz."""
    return train_step.properties.ModelArtifacts.S3ModelArtifacts


def _input_dirs(*names_: str) -> tuple[str, ...]:
    return tuple(f"{PROCESSING_ROOT}/input/{name}" for name in names_)


def write_definitions(use_cases: list[UseCaseConfig], directory: Path = DEFINITIONS_DIR) -> list[Path]:
    """Regenerate the committed templates (`edgeloop pipeline definition --write-snapshots` calls this)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for use_case in use_cases:
        path = directory / f"{use_case.use_case}.json"
        path.write_text(definition_template(use_case))
        written.append(path)
    return written
