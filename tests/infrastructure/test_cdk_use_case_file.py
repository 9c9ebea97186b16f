"""`-c edgeloop:useCaseFile=PATH`: the stack packages a use case from anywhere with the functions and the
pipeline, validated at synth. The whole app is synthesized once (cdk-nag checks included); an invalid
file fails before anything is built (test_cdk_config.py has the context errors)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml

from edgeloop.schemas import names
from edgeloop.schemas.use_case import USE_CASES_DIR, load_use_case_file, resolve_use_case

pytestmark = pytest.mark.slow

USE_CASE = "byo_line"
DATA_PATH_FUNCTIONS = ("ingest", "compaction", "metric_packer", "rollups", "context")


@pytest.fixture(scope="module")
def use_case_file(tmp_path_factory) -> Path:
    document = yaml.safe_load((USE_CASES_DIR / "injection_molding.yaml").read_text())
    document["use_case"] = USE_CASE
    path = tmp_path_factory.mktemp("plant") / "press line.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory, use_case_file):
    from aws_cdk.assertions import Template

    from edgeloop.cdk.app import build_app
    from edgeloop.cdk.constructs.config import USE_CASE_FILE_KEY

    staging = tmp_path_factory.mktemp("lambda-staging")
    outdir = tmp_path_factory.mktemp("cdk-out")
    app, stack = build_app(context={USE_CASE_FILE_KEY: str(use_case_file)}, outdir=str(outdir), staging_dir=staging)
    template = Template.from_stack(stack).to_json()  # runs the cdk-nag checks; raises on any finding
    app.synth()
    return stack, template, staging, outdir


def test_the_data_path_functions_read_the_packaged_file(synthesized):
    from edgeloop.cdk.lambda_asset import LAMBDA_TASK_ROOT

    _, template, _, _ = synthesized
    handlers = {names.FUNCTIONS[key]: key for key in DATA_PATH_FUNCTIONS}
    seen = set()
    for resource in template["Resources"].values():
        properties = resource["Properties"]
        if resource["Type"] != "AWS::Lambda::Function" or properties["Handler"] not in handlers:
            continue
        variables = properties["Environment"]["Variables"]
        assert variables[names.USE_CASE_ENV] == USE_CASE
        assert variables[names.USE_CASE_FILE_ENV] == f"{LAMBDA_TASK_ROOT}/{names.PACKAGED_USE_CASE_FILE}"
        seen.add(handlers[properties["Handler"]])
    assert seen == set(DATA_PATH_FUNCTIONS)


def test_the_lambda_asset_carries_the_file_as_validated_json(synthesized, use_case_file):
    from edgeloop.functions.metric_packer.settings import Settings

    _, _, staging, _ = synthesized
    (asset,) = staging.glob("lambda-asset-*")
    packaged = asset / names.PACKAGED_USE_CASE_FILE
    assert json.loads(packaged.read_text())["use_case"] == USE_CASE
    # what a function's settings resolve at cold start, with the stack's two variables
    environ = {
        names.DATA_BUCKET_ENV: "data-bucket",
        names.USE_CASE_ENV: USE_CASE,
        names.USE_CASE_FILE_ENV: str(packaged),
    }
    assert Settings.from_env(environ).use_case_config == load_use_case_file(use_case_file)


def test_the_pipeline_is_the_files_and_its_steps_read_the_archived_file(synthesized, use_case_file, tmp_path):
    from edgeloop.sagemaker_pipelines.step_builder import PACKAGED_USE_CASE_PATH

    stack, template, _, outdir = synthesized
    (pipeline,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Pipeline"]
    assert pipeline["PipelineName"] == names.pipeline_name(USE_CASE)
    template, _ = pipeline["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Sub"]
    steps = {step["Name"]: step["Arguments"] for step in _all_steps(json.loads(template)["Steps"])}
    # every job (three processing steps, the training job) names the file in the archive, in its
    # environment and in its arguments (the training job's: hyperparameters the toolkit turns into flags)
    for name in ("Dataset", "Evaluate", "Register"):
        assert steps[name]["Environment"][names.USE_CASE_FILE_ENV] == PACKAGED_USE_CASE_PATH, name
        arguments = steps[name]["AppSpecification"]["ContainerArguments"]
        assert arguments[arguments.index("--use-case-file") + 1] == PACKAGED_USE_CASE_PATH, name
        assert arguments[arguments.index("--use-case") + 1] == USE_CASE, name
    assert steps["Train"]["Environment"][names.USE_CASE_FILE_ENV] == PACKAGED_USE_CASE_PATH
    assert steps["Train"]["HyperParameters"]["use-case-file"] == PACKAGED_USE_CASE_PATH
    with tarfile.open(outdir / stack.training.code.asset_path) as archive:
        packaged = archive.extractfile(names.PACKAGED_USE_CASE_FILE).read()
    # what a step resolves from `--use-case byo_line --use-case-file <the archive's file>`
    unpacked = tmp_path / names.PACKAGED_USE_CASE_FILE
    unpacked.write_bytes(packaged)
    assert resolve_use_case(USE_CASE, unpacked, environ={}) == load_use_case_file(use_case_file)
    assert stack.training.group_prefix == names.model_package_group_name(USE_CASE, "")


def _all_steps(steps: list[dict]) -> list[dict]:
    """The steps, with those inside a condition step's branches."""
    found = []
    for step in steps:
        found.append(step)
        arguments = step.get("Arguments", {})
        found += _all_steps(arguments.get("IfSteps", []) + arguments.get("ElseSteps", []))
    return found
