"""The SageMaker Pipeline definition: built offline (no socket opened, nothing written to ~),
byte-identical across builds, equal to the committed templates, and wired as the steps expect."""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import socket
from pathlib import Path

import pytest

from edgeloop.sagemaker_pipelines import pipeline, step_builder, targets
from edgeloop.sagemaker_pipelines.steps import images
from edgeloop.sagemaker_pipelines.targets import PipelineTargets
from edgeloop.schemas import names
from edgeloop.schemas.use_case import load_use_case

USE_CASES = ("extrusion", "injection_molding")
CONCRETE = dict(
    data_bucket="acme-edgeloop-data",
    model_bucket="acme-edgeloop-models",
    image_uri="492215442770.dkr.ecr.eu-central-1.amazonaws.com/sagemaker-xgboost:3.2-0",
    code_s3_uri="s3://cdk-assets-123456789012/code/abc123.gz",
    role_arn="arn:aws:iam::123456789012:role/edgeloop-pipeline",
    region="eu-central-1",
)
SIGNING_KEY_SECRET_ARN = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:edgeloop/model-signing-AbCdEf"


class NetworkUsed(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise NetworkUsed(f"the definition build tried to reach the network: {args!r}")


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """No sockets, no AWS credentials, an empty HOME that must stay empty."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse)
        patch.setattr(socket.socket, "connect_ex", _refuse)
        patch.setattr(socket, "getaddrinfo", _refuse)
        patch.setattr(socket, "create_connection", _refuse)
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            patch.delenv(variable, raising=False)
        patch.setenv("HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def templates(offline) -> dict[str, str]:
    return {name: pipeline.definition_template(load_use_case(name)) for name in USE_CASES}


@pytest.fixture(scope="module")
def extrusion(templates) -> dict:
    return json.loads(templates["extrusion"])


def _steps(definition: dict) -> dict[str, dict]:
    """Every step by name, including those nested in the condition's branches."""
    found = {}
    for step in definition["Steps"]:
        found[step["Name"]] = step
        if step["Type"] == "Condition":
            for nested in step["Arguments"]["IfSteps"] + step["Arguments"]["ElseSteps"]:
                found[nested["Name"]] = nested
    return found


def _args(step: dict) -> list:
    return step["Arguments"]["AppSpecification"]["ContainerArguments"]


def _arg(step: dict, flag: str):
    arguments = _args(step)
    return arguments[arguments.index(flag) + 1]


def _inputs(step: dict) -> dict[str, dict]:
    return {i["InputName"]: i["S3Input"] for i in step["Arguments"]["ProcessingInputs"]}


def _outputs(step: dict) -> dict[str, dict]:
    outputs = step["Arguments"].get("ProcessingOutputConfig", {"Outputs": []})["Outputs"]
    return {o["OutputName"]: o["S3Output"] for o in outputs}


def _output_ref(step_name: str, output: str) -> dict:
    return {"Get": f"Steps.{step_name}.ProcessingOutputConfig.Outputs['{output}'].S3Output.S3Uri"}


MODEL_ARTIFACTS_REF = {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}


def _channels(step: dict) -> dict[str, dict]:
    return {c["ChannelName"]: c for c in step["Arguments"]["InputDataConfig"]}


@pytest.mark.parametrize("use_case", USE_CASES)
def test_committed_template_is_current(templates, use_case):
    committed_path = pipeline.definition_path(use_case)
    assert committed_path.exists(), f"{committed_path} is missing: run `edgeloop pipeline definition --write-snapshots`"
    committed = committed_path.read_text()
    if committed != templates[use_case]:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    templates[use_case].splitlines(keepends=True),
                    fromfile=f"committed {committed_path.name}",
                    tofile="built now",
                )
            )[:60]
        )
        pytest.fail(
            f"{committed_path} is stale; regenerate it with `edgeloop pipeline definition --write-snapshots` "
            f"and review the diff:\n{diff}"
        )


@pytest.fixture(scope="module")
def concrete_text(offline) -> str:
    return pipeline.build_definition(load_use_case("injection_molding"), PipelineTargets(**CONCRETE))


def test_builds_are_byte_identical(concrete_text, offline):
    # Across processes: the committed templates were written by `--write-snapshots` in another one.
    assert pipeline.build_definition(load_use_case("injection_molding"), PipelineTargets(**CONCRETE)) == concrete_text


def test_build_writes_nothing_into_home(templates, offline):
    assert list(Path(offline).iterdir()) == []


def test_template_placeholders_are_exactly_the_fn_sub_ones(templates):
    expected = set(targets.TEMPLATE_PLACEHOLDERS.values())
    for use_case, text in templates.items():
        found = set(re.findall(r"\$\{[^}]*\}", text))
        assert found == expected, f"{use_case}: placeholders {sorted(found)} != {sorted(expected)}"
        assert "edgeloop-template-" not in text, f"{use_case}: a build stand-in was left in the template"


def test_parameters(extrusion):
    parameters = {p["Name"]: p for p in extrusion["Parameters"]}
    assert list(parameters) == [
        "LineId", "StartDate", "EndDate", "ProcessingInstanceType", "TrainingInstanceType",
        "CandidatesPerTemplate", "CodeVersion", "ModelVersion",
    ]  # fmt: skip
    assert "DefaultValue" not in parameters["LineId"], "a run must name its line"
    assert parameters["CandidatesPerTemplate"]["Type"] == "Integer"
    assert (
        parameters["CandidatesPerTemplate"]["DefaultValue"]
        == load_use_case("extrusion").training.candidates_per_template
    )
    assert parameters["ProcessingInstanceType"]["DefaultValue"].startswith("ml.")
    assert parameters["TrainingInstanceType"]["DefaultValue"].startswith("ml.")


def test_steps_order_and_wiring(extrusion):
    assert [s["Name"] for s in extrusion["Steps"]] == ["Dataset", "Train", "Evaluate", "CheckEvaluation"]
    steps = _steps(extrusion)

    dataset = steps["Dataset"]
    assert _arg(dataset, "--line-id") == {"Get": "Parameters.LineId"}
    assert _arg(dataset, "--start") == {"Get": "Parameters.StartDate"}
    assert _arg(dataset, "--end") == {"Get": "Parameters.EndDate"}
    assert _arg(dataset, "--data-bucket") == "${DataBucket}"
    assert _arg(dataset, "--use-case") == "extrusion"
    output_root = _arg(dataset, "--output")
    assert {name: o["LocalPath"] for name, o in _outputs(dataset).items()} == {
        "train": f"{output_root}/train",
        "reference": f"{output_root}/reference",
        "dataset": f"{output_root}/dataset",
    }

    train = steps["Train"]
    assert train["Type"] == "Training"
    assert _channels(train)["train"]["DataSource"]["S3DataSource"]["S3Uri"] == _output_ref("Dataset", "train")
    assert _channels(train)["train"]["DataSource"]["S3DataSource"]["S3DataType"] == "S3Prefix"
    assert train["Arguments"]["HyperParameters"] == {
        "sagemaker_program": "edgeloop.sagemaker_pipelines.steps.train",
        "sagemaker_submit_directory": "${CodeS3Uri}",
        "sagemaker_region": "${AWS::Region}",
        "use-case": "extrusion",
        "candidates-per-template": {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.CandidatesPerTemplate"}]}},
        "seed": str(load_use_case("extrusion").training.seed),
    }
    assert train["Arguments"]["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}

    evaluate = steps["Evaluate"]
    inputs = _inputs(evaluate)
    assert inputs["model"]["S3Uri"] == MODEL_ARTIFACTS_REF
    assert inputs["reference"]["S3Uri"] == _output_ref("Dataset", "reference")
    assert inputs["dataset"]["S3Uri"] == _output_ref("Dataset", "dataset")
    for flag, name in (("--model", "model"), ("--reference", "reference"), ("--dataset", "dataset")):
        assert _arg(evaluate, flag) == inputs[name]["LocalPath"]
    assert _arg(evaluate, "--model-bucket") == "${ModelBucket}"
    assert _arg(evaluate, "--output") == _outputs(evaluate)["evaluation"]["LocalPath"]

    register = steps["Register"]
    inputs = _inputs(register)
    assert inputs["model"]["S3Uri"] == MODEL_ARTIFACTS_REF
    assert inputs["dataset"]["S3Uri"] == _output_ref("Dataset", "dataset")
    assert inputs["evaluation"]["S3Uri"] == _output_ref("Evaluate", "evaluation")
    assert _arg(register, "--trained") == inputs["model"]["LocalPath"]
    assert _arg(register, "--evaluation") == inputs["evaluation"]["LocalPath"]
    assert _arg(register, "--dataset") == inputs["dataset"]["LocalPath"]
    assert _arg(register, "--code-version") == {"Get": "Parameters.CodeVersion"}
    assert _arg(register, "--version") == {"Get": "Parameters.ModelVersion"}
    assert _arg(register, "--model-bucket") == "${ModelBucket}"
    assert _arg(register, "--serving-image") == "${ServingImageUri}"


def _work_uri_values(uri: dict) -> list:
    return uri["Std:Join"]["Values"]


def test_every_processing_step_runs_a_step_module_of_this_repository(extrusion):
    """In SageMaker's XGBoost image: the bootstrap unpacks the code archive, installs it, runs the module."""
    processing = [s for s in _steps(extrusion).values() if s["Type"] == "Processing"]
    assert sorted(s["Name"] for s in processing) == ["Dataset", "Evaluate", "Register"]
    for step in processing:
        app = step["Arguments"]["AppSpecification"]
        assert app["ImageUri"] == "${StepImageUri}"
        assert step["Arguments"]["RoleArn"] == "${PipelineRoleArn}"
        shell, dash_c, script, name, module = app["ContainerEntrypoint"]
        assert (shell, dash_c, script, name) == ("/bin/sh", "-c", step_builder.PROCESSING_BOOTSTRAP, "edgeloop-step")
        assert module.startswith("edgeloop.sagemaker_pipelines.steps.")
        assert importlib.util.find_spec(module) is not None, f"step {step['Name']} runs {module}, which does not exist"
        assert _inputs(step)["code"]["S3Uri"] == "${CodeS3Uri}"
        assert step["Arguments"]["Environment"]["AWS_DEFAULT_REGION"] == "${AWS::Region}"
        for output in _outputs(step).values():
            values = _work_uri_values(output["S3Uri"])
            assert values[:3] == ["s3://${DataBucket}", names.PIPELINE_WORK_PREFIX, "extrusion"]
            assert values[3] == {"Get": "Execution.PipelineExecutionId"}, "executions must not share outputs"


def test_train_is_a_training_job_of_the_step_image_without_sdk_code(extrusion):
    train = _steps(extrusion)["Train"]
    arguments = train["Arguments"]
    algorithm = arguments["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == "${StepImageUri}"
    assert algorithm["TrainingInputMode"] == "File"
    # no entrypoint override: the XGBoost container's toolkit runs the script mode its hyperparameters ask for
    assert "ContainerEntrypoint" not in algorithm and "ContainerArguments" not in algorithm
    assert arguments["RoleArn"] == "${PipelineRoleArn}"
    assert arguments["ResourceConfig"]["InstanceCount"] == 1
    assert arguments["StoppingCondition"]["MaxRuntimeInSeconds"] == step_builder.TRAINING_MAX_RUNTIME_S
    assert arguments["Environment"]["AWS_DEFAULT_REGION"] == "${AWS::Region}"
    channels = _channels(train)
    # only our channel: nothing the SDK staged (source code, drivers) rides along; the toolkit fetches the code
    assert sorted(channels) == ["train"]
    output = arguments["OutputDataConfig"]
    assert output["CompressionType"] == "GZIP"
    assert _work_uri_values(output["S3OutputPath"]) == [
        "s3://${DataBucket}", names.PIPELINE_WORK_PREFIX, "extrusion", {"Get": "Execution.PipelineExecutionId"}, "model"
    ]  # fmt: skip
    # script mode: the toolkit runs the train module from the code archive and passes the rest on as its flags
    hyperparameters = arguments["HyperParameters"]
    assert hyperparameters["sagemaker_program"] == "edgeloop.sagemaker_pipelines.steps.train"
    assert hyperparameters["sagemaker_submit_directory"] == "${CodeS3Uri}"
    assert hyperparameters["sagemaker_region"] == "${AWS::Region}"
    flags = {k for k in hyperparameters if not k.startswith("sagemaker_")}
    assert flags == {"use-case", "candidates-per-template", "seed"}


def test_every_container_string_fits_sagemakers_limits_and_survives_fn_sub(extrusion):
    """256 characters per entrypoint/argument item, 2500 per hyperparameter (botocore's model of the
    API); no "${" but the template's own placeholders, since the template goes through Fn::Sub."""
    for step in _steps(extrusion).values():
        app = step.get("Arguments", {}).get("AppSpecification", {})
        for item in [*app.get("ContainerEntrypoint", []), *app.get("ContainerArguments", [])]:
            assert not isinstance(item, str) or len(item) <= 256, (step["Name"], item)
        for value in step.get("Arguments", {}).get("HyperParameters", {}).values():
            assert not isinstance(value, str) or len(value) <= 2500
    assert "${" not in step_builder.PROCESSING_BOOTSTRAP


def test_evaluation_property_file_condition_and_fail_step(extrusion):
    steps = _steps(extrusion)
    evaluate = steps["Evaluate"]
    (property_file,) = evaluate["PropertyFiles"]
    assert property_file == {
        "PropertyFileName": "EvaluationReport",
        "OutputName": "evaluation",
        "FilePath": "evaluation.json",
    }
    assert "evaluation" in _outputs(evaluate)

    report = {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"}
    check = steps["CheckEvaluation"]["Arguments"]
    assert check["Conditions"] == [
        {"Type": "Equals", "LeftValue": {"Std:JsonGet": {"PropertyFile": report, "Path": "passed"}}, "RightValue": True}
    ]
    assert [s["Name"] for s in check["IfSteps"]] == ["Register"]
    assert [s["Name"] for s in check["ElseSteps"]] == ["ValidationFailed"]
    fail = steps["ValidationFailed"]
    assert fail["Type"] == "Fail"
    message = fail["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert {"Std:JsonGet": {"PropertyFile": report, "Path": "reason"}} in message
    assert {"Get": "Parameters.LineId"} in message


def test_concrete_definition_has_the_given_values_and_no_placeholder(concrete_text):
    text = concrete_text
    assert "${" not in text
    steps = _steps(json.loads(text))
    register = steps["Register"]
    assert register["Arguments"]["RoleArn"] == CONCRETE["role_arn"]
    assert register["Arguments"]["AppSpecification"]["ImageUri"] == CONCRETE["image_uri"]
    # no serving image given: the region's, from the SDK-generated table
    assert _arg(register, "--serving-image") == images.serving_image_uri(CONCRETE["region"])
    assert _inputs(register)["code"]["S3Uri"] == CONCRETE["code_s3_uri"]
    assert _arg(register, "--model-bucket") == CONCRETE["model_bucket"]
    assert _arg(register, "--use-case") == "injection_molding"
    assert _arg(steps["Dataset"], "--data-bucket") == CONCRETE["data_bucket"]
    assert register["Arguments"]["Environment"]["AWS_DEFAULT_REGION"] == CONCRETE["region"]
    # the environment is restored after the build
    assert os.environ.get("SAGEMAKER_USER_CONFIG_OVERRIDE") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("role_arn", "edgeloop-pipeline"), ("code_s3_uri", "code/abc.zip"), ("data_bucket", ""), ("image_uri", " ")],
)
def test_bad_targets_are_refused_naming_field_and_value(field, value):
    with pytest.raises(ValueError, match=re.escape(f"{field}={value!r}")):
        pipeline.build_definition(load_use_case("extrusion"), PipelineTargets(**{**CONCRETE, field: value}))


def test_only_the_register_step_gets_the_signing_key_secret_from_its_placeholder(extrusion):
    assert targets.TEMPLATE_PLACEHOLDERS["signing_key_secret_arn"] == "${ModelSigningKeySecretArn}"
    environments = {
        name: step["Arguments"]["Environment"]
        for name, step in _steps(extrusion).items()
        if step["Type"] in ("Processing", "Training")
    }
    assert environments["Register"][names.MODEL_SIGNING_KEY_SECRET_ARN_ENV] == "${ModelSigningKeySecretArn}"
    assert names.MODEL_SIGNING_KEY_ENV not in environments["Register"]  # never a key in the definition
    for name, environment in environments.items():
        if name != "Register":
            assert names.MODEL_SIGNING_KEY_SECRET_ARN_ENV not in environment, name


@pytest.fixture(scope="module")
def signed_concrete(offline) -> dict:
    text = pipeline.build_definition(
        load_use_case("injection_molding"), PipelineTargets(**CONCRETE, signing_key_secret_arn=SIGNING_KEY_SECRET_ARN)
    )
    return json.loads(text)


def test_a_concrete_definition_carries_the_given_secret_arn_and_an_empty_one_none(signed_concrete, concrete_text):
    register = _steps(signed_concrete)["Register"]["Arguments"]["Environment"]
    assert register[names.MODEL_SIGNING_KEY_SECRET_ARN_ENV] == SIGNING_KEY_SECRET_ARN
    unsigned = _steps(json.loads(concrete_text))["Register"]["Arguments"]["Environment"]
    assert names.MODEL_SIGNING_KEY_SECRET_ARN_ENV not in unsigned  # "" (the default): unsigned payloads
    # the secret ARN is the only difference
    assert json.dumps(signed_concrete, sort_keys=True).replace(
        f', "{names.MODEL_SIGNING_KEY_SECRET_ARN_ENV}": "{SIGNING_KEY_SECRET_ARN}"', ""
    ) == json.dumps(json.loads(concrete_text), sort_keys=True)


@pytest.mark.parametrize(
    "value",
    [
        "edgeloop/model-signing",
        "arn:aws:kms:eu-central-1:123456789012:key/abc",
        "arn:aws:secretsmanager:eu-central-1:1:secret:x",
    ],
)
def test_a_signing_key_secret_arn_that_is_not_one_is_refused_naming_it(value):
    with pytest.raises(ValueError, match=re.escape(f"signing_key_secret_arn={value!r} is not a Secrets Manager")):
        pipeline.build_definition(load_use_case("extrusion"), PipelineTargets(**CONCRETE, signing_key_secret_arn=value))


def test_pipeline_names():
    assert names.pipeline_name("extrusion") == "edgeloop-extrusion"
    # SageMaker pipeline names allow letters, digits and hyphens only
    assert pipeline.pipeline_name(load_use_case("injection_molding")) == "edgeloop-injection-molding"
