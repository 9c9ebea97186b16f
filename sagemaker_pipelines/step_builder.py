"""The pipeline's parameters and steps, built with the SageMaker SDK: one step per step module.

Steps are wired by S3 outputs under the execution's work prefix of the data bucket. Nothing here
imports the SDK at module level (seconds): build only inside offline_sdk.offline_sagemaker().
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeloop.schemas import names
from edgeloop.schemas.use_case import UseCaseConfig

from .targets import PipelineTargets

STEP_MODULE_PREFIX = "edgeloop.sagemaker_pipelines.steps."
PROCESSING_ROOT = "/opt/ml/processing"
# Where a processing job finds the step code archive (step_code.py): one file, named by its S3 key.
CODE_DIR = f"{PROCESSING_ROOT}/input/code"
# Where the code runs from: the directory the training toolkit uses for the same archive.
CODE_RUN_DIR = "/opt/ml/code"
# A use-case file packaged in the archive (step_code.py), where every step finds it.
PACKAGED_USE_CASE_PATH = f"{CODE_RUN_DIR}/{names.PACKAGED_USE_CASE_FILE}"
# A processing job's entrypoint in SageMaker's XGBoost image (images.py), which has no entry of ours:
# what the training toolkit does for a training job (unpack, `pip install . -r requirements.txt`,
# `python -m <module>` in the code directory), then the step module with the step's arguments.
# Run as `sh -c PROCESSING_BOOTSTRAP edgeloop-step <module> <arguments...>`. SageMaker allows 256
# characters per entrypoint item, and the text goes through CloudFormation's Fn::Sub: no "${".
PROCESSING_BOOTSTRAP = (
    "set -eu; m=$1; shift; "
    f"mkdir -p {CODE_RUN_DIR}; tar -xzf {CODE_DIR}/* -C {CODE_RUN_DIR}; cd {CODE_RUN_DIR}; "
    "python3 -m pip install -q --no-cache-dir . -r requirements.txt; "
    'exec python3 -m "$m" "$@"'
)

DEFAULT_PROCESSING_INSTANCE_TYPE = "ml.m5.large"
DEFAULT_TRAINING_INSTANCE_TYPE = "ml.m5.xlarge"
# The training job's input channel of the examples: /opt/ml/input/data/train, which the toolkit
# passes to the script as SM_CHANNEL_TRAIN (train.py's default --examples).
TRAIN_CHANNEL = "train"
# Script mode of the XGBoost container's toolkit (sagemaker-containers): the archive to fetch and
# the module it runs as `python -m <module> --<hyperparameter> <value> ...` (those two excluded).
SCRIPT_MODE_PROGRAM = "sagemaker_program"
SCRIPT_MODE_SUBMIT_DIRECTORY = "sagemaker_submit_directory"
SCRIPT_MODE_REGION = "sagemaker_region"
# A search over every template on a year of one line's data takes well under this; a job that hangs stops.
TRAINING_MAX_RUNTIME_S = 4 * 3600

# Step names: the CLI, the tests and the console show them.
DATASET_STEP = "Dataset"
TRAIN_STEP = "Train"
EVALUATE_STEP = "Evaluate"
CHECK_STEP = "CheckEvaluation"
REGISTER_STEP = "Register"
FAIL_STEP = "ValidationFailed"
EVALUATION_PROPERTY_FILE = "EvaluationReport"


@dataclass(frozen=True)
class PipelineParameters:
    line_id: object
    start_date: object
    end_date: object
    processing_instance_type: object
    training_instance_type: object
    candidates_per_template: object
    code_version: object
    model_version: object

    @classmethod
    def create(cls, use_case: UseCaseConfig) -> PipelineParameters:
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
            # Empty: register.py records the package version the code archive's setup.py installs.
            code_version=ParameterString("CodeVersion", ""),
            # MAJOR.MINOR.PATCH of the registered model; empty: the next patch in the line's group.
            model_version=ParameterString("ModelVersion", ""),
        )

    @property
    def all(self) -> list:
        return list(vars(self).values())


class StepBuilder:
    """One step per step module, wired by S3 outputs under the execution's work prefix."""

    def __init__(
        self,
        use_case: UseCaseConfig,
        targets: PipelineTargets,
        parameters: PipelineParameters,
        *,
        packaged_file: bool = False,
    ) -> None:
        """`packaged_file`: the steps read the use case from the code archive's PACKAGED_USE_CASE_FILE."""
        import boto3
        from sagemaker.core.workflow.pipeline_context import PipelineSession

        self.use_case = use_case
        self.packaged_file = packaged_file
        self.pipeline_name = names.pipeline_name(use_case.use_case)
        self.targets = targets
        self.parameters = parameters
        # Static dummy credentials: nothing is signed or sent while building; this only stops botocore
        # from looking for credentials (files, IMDS) at all.
        boto_session = boto3.Session(
            aws_access_key_id="offline-definition",
            aws_secret_access_key="offline-definition",
            region_name=targets.session_region,
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
                    **self._use_case_flags(),
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
            # No source_code (the SDK would upload it while the definition is built): the container's
            # script mode is asked for through its own hyperparameters instead.
            training_image=self.targets.image_uri,
            role=self.targets.role_arn,
            base_job_name=f"{self.pipeline_name}-train",
            compute=Compute(instance_type=p.training_instance_type, instance_count=1),
            stopping_condition=StoppingCondition(max_runtime_in_seconds=TRAINING_MAX_RUNTIME_S),
            # SageMaker writes <output path>/<job name>/output/model.tar.gz: under this execution's outputs.
            output_data_config=OutputDataConfig(s3_output_path=self._work_uri("model"), compression_type="GZIP"),
            hyperparameters={
                SCRIPT_MODE_PROGRAM: STEP_MODULE_PREFIX + "train",
                SCRIPT_MODE_SUBMIT_DIRECTORY: self.targets.code_s3_uri,
                SCRIPT_MODE_REGION: self.targets.region,
                **{flag.removeprefix("--"): value for flag, value in self._use_case_flags().items()},
                # Hyperparameters are strings; Join renders the integer parameter as one.
                "candidates-per-template": Join(on="", values=[p.candidates_per_template]),
                "seed": str(self.use_case.training.seed),
            },
            environment=self._environment(),
            sagemaker_session=self.session,
        )
        step_args = trainer.train(
            input_data_config=[InputData(channel_name=TRAIN_CHANNEL, data_source=_output_uri(dataset, "train"))]
        )
        return TrainingStep(
            TRAIN_STEP, step_args=step_args, description="randomized search over the templates, per line"
        )

    def evaluate_step(self, dataset, train):
        from sagemaker.core.workflow.properties import PropertyFile
        from sagemaker.mlops.workflow.steps import ProcessingStep

        from .steps.evaluate import EVALUATION_FILE

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
                    **self._use_case_flags(),
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
            description="candidate vs persistence, setpoint and champion on the reference data (device scorer); "
            "passed: the persistence gate and the champion comparison",
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
                    **self._use_case_flags(),
                    "--version": p.model_version,
                    "--dataset": dataset_dir,
                    "--evaluation": evaluation_dir,
                    "--code-version": p.code_version,
                    "--serving-image": self.targets.serving_image,
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
            entrypoint=["/bin/sh", "-c", PROCESSING_BOOTSTRAP, "edgeloop-step", STEP_MODULE_PREFIX + step_module],
            env={**self._environment(), **(extra_env or {})},
            base_job_name=f"{self.pipeline_name}-{step_module}",
            sagemaker_session=self.session,
        )

    def _use_case_flags(self) -> dict[str, str]:
        """--use-case, and with a packaged file --use-case-file: the step resolves both (resolve_use_case)."""
        flags = {"--use-case": self.use_case.use_case}
        if self.packaged_file:
            flags["--use-case-file"] = PACKAGED_USE_CASE_PATH
        return flags

    def _environment(self) -> dict[str, str]:
        # boto3 inside the step finds its region and the buckets the same way the Lambdas do.
        environment = {
            "AWS_DEFAULT_REGION": self.targets.region,
            names.DATA_BUCKET_ENV: self.targets.data_bucket,
            names.MODEL_BUCKET_ENV: self.targets.model_bucket,
            names.USE_CASE_ENV: self.use_case.use_case,
        }
        if self.packaged_file:  # resolve_use_case: the file, whose use_case must be the name above
            environment[names.USE_CASE_FILE_ENV] = PACKAGED_USE_CASE_PATH
        return environment

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
