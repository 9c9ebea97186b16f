"""The SageMaker Pipeline of a use case: dataset -> train -> evaluate -> (passed?) register | fail.

Every step runs one of this repository's step modules (`python -m edgeloop.sagemaker_pipelines.steps.<step>`)
with the same arguments `edgeloop pipeline run-local` uses (Train: as hyperparameters the container's
toolkit turns back into those flags), so the cloud and the local run differ only in where files live.

No image of our own: every job runs in SageMaker's managed XGBoost container (steps/images.py, the
XGBoost the tests ran), from the step code archive (step_code.py: the modules, pinned requirements)
that the stack uploads as an S3 asset (CodeS3Uri). Train is a TrainingStep, the others ProcessingSteps
(SDK 3.27):
- Train: a `ModelTrainer` with the XGBoost image and no `SourceCode` (a `SourceCode` would make the
  SDK upload its driver bundle to a staging bucket while the definition is built). The container's
  legacy script mode is asked for through its hyperparameters sagemaker_program (the train module)
  and sagemaker_submit_directory (the archive): its toolkit unpacks the archive into /opt/ml/code,
  pip-installs it with its requirements and runs `python -m edgeloop.sagemaker_pipelines.steps.train
  --use-case ... --candidates-per-template ... --seed ...`, with SM_CHANNEL_TRAIN (channel "train": the
  Dataset step's train output) and SM_MODEL_DIR (/opt/ml/model, one directory per line) as train.py's
  defaults. /opt/ml/model becomes the job's model.tar.gz, which Evaluate and Register take from
  ModelArtifacts.S3ModelArtifacts. A training job is what SageMaker tracks as training (lineage, model
  artifacts, the console's training view), and the instance type is the TrainingInstanceType parameter.
- Dataset, Evaluate, Register: processing jobs whose entrypoint (step_builder.PROCESSING_BOOTSTRAP)
  does what the toolkit does for training, then runs the step module with our arguments; they upload
  nothing, and are what `run-local` mirrors.
- Register: `ModelStep(ModelBuilder.register(..., customer_metadata_properties=...))` only creates
  a model package from existing artifacts. Our registration first exports and parity-checks the
  weight-only tiers, signs and uploads them, writes the manifest and creates the line's Model
  Package Group if missing; those results (sha256s, tiers, min runtimes) exist only after that code
  has run, so the step that computes them registers them (register.py's main).

The definition is built offline: region and SDK config are set before the SDK is imported, role
validation and telemetry are off, the boto3 session has static dummy credentials (no credential
lookup) and every S3 location is explicit (the SDK uploads nothing and asks S3 nothing).

Beside this module: targets.py (where the pipeline runs; the template's placeholders),
step_builder.py (the parameters and the steps), step_code.py (the code archive), offline_sdk.py
(the SDK kept offline and quiet).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeloop.schemas import names
from edgeloop.schemas.use_case import UseCaseConfig

from .image_table import write_image_table
from .offline_sdk import offline_sagemaker, quiet_sdk
from .step_builder import PipelineParameters, StepBuilder
from .targets import TEMPLATE_PLACEHOLDERS, TEMPLATE_STAND_INS, PipelineTargets, template_targets

DEFINITIONS_DIR = Path(__file__).resolve().parent / "definitions"


def pipeline_name(use_case: UseCaseConfig | str) -> str:
    return names.pipeline_name(use_case if isinstance(use_case, str) else use_case.use_case)


def build_definition(use_case: UseCaseConfig, targets: PipelineTargets, *, packaged_file: bool = False) -> str:
    """The pipeline definition JSON for one use case; byte-identical for identical arguments.

    `targets.signing_key_secret_arn`: the Secrets Manager secret holding the register step's Ed25519
    signing key (its ARN goes into that step's environment); empty: registered payloads are unsigned.
    `packaged_file`: the use case is a file packaged in the code archive (step_code.py, names.
    PACKAGED_USE_CASE_FILE), which every step reads through EDGELOOP_USE_CASE_FILE."""
    with offline_sagemaker(targets.session_region), quiet_sdk():
        raw = _build_pipeline(use_case, targets, packaged_file).definition()
    # Key order is meaningless in the definition; sorting it makes the output stable and diffable.
    return json.dumps(json.loads(raw), indent=2, sort_keys=True) + "\n"


def definition_template(use_case: UseCaseConfig, *, packaged_file: bool = False) -> str:
    """The definition with CloudFormation Fn::Sub placeholders: what is committed and deployed
    (with `packaged_file`: what the stack builds at synth for -c edgeloop:useCaseFile)."""
    text = build_definition(use_case, template_targets(), packaged_file=packaged_file)
    for field, stand_in in TEMPLATE_STAND_INS.items():
        text = text.replace(stand_in, TEMPLATE_PLACEHOLDERS[field])
    return text


def definition_path(use_case: UseCaseConfig | str) -> Path:
    name = use_case if isinstance(use_case, str) else use_case.use_case
    return DEFINITIONS_DIR / f"{name}.json"


def _build_pipeline(use_case: UseCaseConfig, targets: PipelineTargets, packaged_file: bool = False):
    """The SDK Pipeline object. Imports the SDK (seconds): call only inside offline_sagemaker()."""
    from sagemaker.mlops.workflow.pipeline import Pipeline

    parameters = PipelineParameters.create(use_case)
    builder = StepBuilder(use_case, targets, parameters, packaged_file=packaged_file)
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


def write_definitions(use_cases: list[UseCaseConfig], directory: Path = DEFINITIONS_DIR) -> list[Path]:
    """Regenerate the committed templates (`edgeloop pipeline definition --write-snapshots` calls this),
    and the image table they are deployed with (steps/xgboost_images.json, from the installed SDK)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [write_image_table()]
    for use_case in use_cases:
        path = directory / f"{use_case.use_case}.json"
        path.write_text(definition_template(use_case))
        written.append(path)
    return written
