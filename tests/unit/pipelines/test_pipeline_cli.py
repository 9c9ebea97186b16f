"""`edgeloop pipeline ...`: definition, upsert/start against moto's SageMaker, run-local's wiring."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner
from upsert_arguments import ROLE_ARN, UPSERT_ARGUMENTS

from edgeloop.cli import app
from edgeloop.cli import pipeline as pipeline_cli
from edgeloop.sagemaker_pipelines import pipeline
from edgeloop.schemas import names

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["pipeline", *args], catch_exceptions=False)


def test_cli_help_does_not_import_the_sagemaker_sdk():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from edgeloop.cli import app\n"
        "result = CliRunner().invoke(app, ['pipeline', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'run-local' in result.output\n"
        "print(sorted(m for m in sys.modules if m == 'sagemaker' or m.startswith('sagemaker.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_definition_command_writes_the_committed_template(tmp_path):
    out = tmp_path / "def.json"
    result = invoke("definition", "--use-case", "injection_molding", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text() == pipeline.definition_path("injection_molding").read_text()


def test_definition_command_names_an_unknown_use_case():
    result = invoke("definition", "--use-case", "welding")
    assert result.exit_code == 2
    assert "--use-case='welding'" in result.output


@mock_aws
def test_upsert_creates_then_updates_the_pipeline():
    from edgeloop.sagemaker_pipelines.steps import images

    # Without --image-uri the steps run in SageMaker's XGBoost image of the region.
    image_at = UPSERT_ARGUMENTS.index("--image-uri")
    arguments = UPSERT_ARGUMENTS[:image_at] + UPSERT_ARGUMENTS[image_at + 2 :]
    created = invoke("upsert", *arguments, "--use-case", "extrusion")
    assert created.exit_code == 0, created.output
    assert "created arn:aws:sagemaker:" in created.output
    sagemaker = boto3.client("sagemaker", region_name="eu-west-1")
    described = sagemaker.describe_pipeline(PipelineName="edgeloop-extrusion")
    assert described["RoleArn"] == ROLE_ARN
    definition = json.loads(described["PipelineDefinition"])
    assert [s["Name"] for s in definition["Steps"]] == ["Dataset", "Train", "Evaluate", "CheckEvaluation"]
    assert "s3://acme-assets/code.zip" in described["PipelineDefinition"]
    assert images.step_image_uri("eu-west-1") in described["PipelineDefinition"]
    assert "${" not in described["PipelineDefinition"]

    # A second upsert (here with a tiny definition: the SDK build is covered above) updates in place.
    arn, was_created = pipeline_cli.upsert_pipeline(
        name="edgeloop-extrusion", definition='{"Version": "2020-12-01", "Steps": []}', role_arn=ROLE_ARN,
        description="second",
    )  # fmt: skip
    assert not was_created and arn == described["PipelineArn"]
    assert sagemaker.describe_pipeline(PipelineName="edgeloop-extrusion")["PipelineDefinition"].endswith('"Steps": []}')
    assert len(sagemaker.list_pipelines()["PipelineSummaries"]) == 1


@mock_aws
def test_start_passes_the_parameters():
    pipeline_cli.upsert_pipeline(
        name=names.pipeline_name("extrusion"),
        definition=pipeline.definition_path("extrusion").read_text(),
        role_arn=ROLE_ARN,
        description="test",
    )
    result = invoke(
        "start", "--use-case", "extrusion", "--line", "line-2", "--start", "2026-01-01", "--end", "2026-03-31",
        "--candidates-per-template", "5", "--instance-type", "ml.c5.xlarge", "--code-version", "abc123",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sagemaker = boto3.client("sagemaker")
    (execution,) = sagemaker.list_pipeline_executions(PipelineName="edgeloop-extrusion")["PipelineExecutionSummaries"]
    assert execution["PipelineExecutionArn"] in result.output
    given = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=execution["PipelineExecutionArn"])
    assert {p["Name"]: p["Value"] for p in given["PipelineParameters"]} == {
        "LineId": "line-2",
        "StartDate": "2026-01-01",
        "EndDate": "2026-03-31",
        "CodeVersion": "abc123",
        "ProcessingInstanceType": "ml.c5.xlarge",
        "CandidatesPerTemplate": "5",
    }


@mock_aws
def test_start_without_a_deployed_pipeline_says_so():
    result = invoke("start", "--use-case", "extrusion", "--line", "line-1", "--code-version", "x")
    assert result.exit_code == 2
    assert "pipeline 'edgeloop-extrusion' does not exist" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2026-13-01"], "--start='2026-13-01' is not an ISO date"),
        (["--end", "yesterday"], "--end='yesterday' is not an ISO date"),
        (["--start", "2026-02-01", "--end", "2026-01-01"], "--end=2026-01-01 is before --start=2026-02-01"),
        (["--model-version", "v2"], "--model-version='v2' is not MAJOR.MINOR.PATCH"),
    ],
)
def test_start_refuses_bad_values_naming_them(args, message):
    result = invoke("start", "--line", "line-1", "--code-version", "x", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_execution_parameters_leave_unset_values_to_the_pipeline_defaults():
    parameters = pipeline_cli.execution_parameters(
        line_id="l1", start=None, end=date(2026, 2, 1), model_version="1.2.3"
    )
    assert parameters == [
        {"Name": "LineId", "Value": "l1"},
        {"Name": "StartDate", "Value": ""},
        {"Name": "EndDate", "Value": "2026-02-01"},
        {"Name": "ModelVersion", "Value": "1.2.3"},
    ]


def test_execution_display_name_is_valid_for_sagemaker():
    name = pipeline_cli.execution_display_name("line_7.b", datetime(2026, 11, 23, 18, 5, 9, tzinfo=UTC))
    assert name == "line-7-b-20261123-180509"


@dataclass
class FakeResult:
    line_id: str
    passed: bool
    reason: str
    model_package_arn: str | None = None
    metrics: dict = field(default_factory=dict)


@pytest.fixture
def fake_local_run(monkeypatch):
    """Stands in for sagemaker_pipelines.local_run (engineer C's, tested in tests/integration/pipelines)."""
    calls = []
    outcomes: dict[str, FakeResult] = {}

    def run_local(**kwargs):
        calls.append(kwargs)
        return [outcomes[line] for line in kwargs["line_ids"]]

    module = types.ModuleType("edgeloop.sagemaker_pipelines.local_run")
    module.run_local = run_local
    monkeypatch.setitem(sys.modules, "edgeloop.sagemaker_pipelines.local_run", module)
    return calls, outcomes


def test_run_local_passes_arguments_and_prints_a_table(fake_local_run, tmp_path):
    calls, outcomes = fake_local_run
    outcomes["line-1"] = FakeResult(
        "line-1",
        True,
        "no champion",
        "arn:aws:sagemaker:eu-west-1:123456789012:model-package/g/1",
        {"mse": 0.00123, "mae": 0.02},
    )
    result = invoke(
        "run-local", "--use-case", "extrusion", "--line", "line-1", "--start", "2026-01-01",
        "--work-dir", str(tmp_path), "--candidates-per-template", "3", "--approve",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert call["line_ids"] == ["line-1"]
    assert call["start"] == date(2026, 1, 1) and call["end"] is None
    assert call["candidates_per_template"] == 3 and call["approve"] is True
    assert call["work_dir"] == tmp_path and call["use_case"] == "extrusion"
    assert "0.00123" in result.output and "no champion" in result.output


def test_run_local_exits_1_when_a_line_fails(fake_local_run, tmp_path):
    calls, outcomes = fake_local_run
    outcomes["line-1"] = FakeResult("line-1", True, "ok", "arn:1", {"mse": 0.1, "mae": 0.2})
    outcomes["line-2"] = FakeResult("line-2", False, "candidate MSE 0.3 > 1.1 x champion MSE 0.2")
    result = invoke(
        "run-local", "--use-case", "extrusion", "--line", "line-1", "--line", "line-2", "--work-dir", str(tmp_path)
    )
    assert result.exit_code == 1
    assert calls[0]["line_ids"] == ["line-1", "line-2"]
    assert "candidate MSE 0.3 > 1.1 x champion MSE 0.2" in result.output


def test_run_local_refuses_a_bad_date_before_running(fake_local_run, tmp_path):
    calls, _ = fake_local_run
    result = invoke("run-local", "--line", "line-1", "--end", "2026-02-30", "--work-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "--end='2026-02-30' is not an ISO date" in result.output
    assert calls == []


def test_code_archive_command_writes_what_the_stack_uploads(tmp_path):
    import tarfile

    from edgeloop.sagemaker_pipelines.step_code import build_archive

    result = invoke("code-archive", "--out", str(tmp_path / "cli"))
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "cli").glob("step-code-*/sourcedir.tar.gz")
    assert written.parent.name in result.output
    assert written.read_bytes() == build_archive(tmp_path / "direct").read_bytes()
    with tarfile.open(written) as archive:
        assert "edgeloop/sagemaker_pipelines/steps/train.py" in archive.getnames()
