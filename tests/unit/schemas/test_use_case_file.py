"""A use case from any path: the loader, the one resolution (options, environment, no default), and its
users: the functions' settings, the CLI (`--use-case-file`), run-local and the pipeline steps."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.schemas import names
from edgeloop.schemas.use_case import (
    USE_CASES_DIR,
    UseCaseError,
    load_use_case,
    load_use_case_file,
    resolve_use_case,
)

runner = CliRunner()
NO_ENV: dict[str, str] = {}


def own_use_case(directory: Path, name: str = "byo_line", filename: str = "my line.yaml", **changes) -> Path:
    """The injection-molding use case renamed, as a user's file outside the package."""
    document = yaml.safe_load((USE_CASES_DIR / "injection_molding.yaml").read_text())
    document.update(use_case=name, **changes)
    path = directory / filename
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def no_use_case_in_the_environment(monkeypatch):
    monkeypatch.delenv(names.USE_CASE_ENV, raising=False)
    monkeypatch.delenv(names.USE_CASE_FILE_ENV, raising=False)


# --- the loader ------------------------------------------------------------------------------------


def test_a_file_anywhere_loads_like_the_packaged_one(tmp_path):
    copied = tmp_path / "plant" / "extrusion copy.yml"
    copied.parent.mkdir()
    shutil.copy(USE_CASES_DIR / "extrusion.yaml", copied)
    assert resolve_use_case(file=copied, environ=NO_ENV) == load_use_case("extrusion")
    as_json = tmp_path / "line.json"
    as_json.write_text(load_use_case("extrusion").model_dump_json())
    assert load_use_case_file(as_json) == load_use_case("extrusion")


@pytest.mark.parametrize(
    "content, expected",
    [
        ("use_case: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "not a mapping"),
        ("", "NoneType, not a mapping"),
    ],
)
def test_an_unreadable_document_names_the_option_and_the_file(tmp_path, content, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    with pytest.raises(UseCaseError) as raised:
        resolve_use_case(file=path, environ=NO_ENV)
    assert f"--use-case-file='{path}'" in str(raised.value) and expected in str(raised.value)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"sample_period_s": "fast"}, "sample_period_s='fast': Input should be a valid number"),
        ({"target_metric": "no_such_metric"}, "target_metric='no_such_metric' is not one of metrics"),
        ({"training": {"cv_folds": 1}}, "training.cv_folds=1: Input should be greater than or equal to 2"),
        ({"metrics": None, "unknown_key": 1}, "metrics=None: Input should be a valid list"),
    ],
)
def test_an_invalid_file_names_the_file_and_the_field(tmp_path, changes, expected):
    path = own_use_case(tmp_path, **changes)
    with pytest.raises(UseCaseError) as raised:
        resolve_use_case(file=str(path), environ=NO_ENV)
    assert str(raised.value).startswith(f"--use-case-file='{path}': ") and expected in str(raised.value)


def test_a_missing_field_and_a_missing_file_are_named(tmp_path):
    document = yaml.safe_load((USE_CASES_DIR / "extrusion.yaml").read_text())
    del document["pack_window_s"]
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(UseCaseError, match=r"partial.yaml': pack_window_s is missing$"):
        load_use_case_file(path, "--use-case-file")
    with pytest.raises(UseCaseError, match=r"--use-case-file='nowhere/line.yaml': no such file \(/"):
        resolve_use_case(file="nowhere/line.yaml", environ=NO_ENV)


def test_an_edited_file_is_read_again(tmp_path):
    path = own_use_case(tmp_path)
    assert load_use_case_file(path).horizon_s == 300
    own_use_case(tmp_path, horizon_s=600, description="edited, and longer than before")
    assert load_use_case_file(path).horizon_s == 600


# --- the one resolution ---------------------------------------------------------------------------


def test_no_use_case_at_all_is_an_error_naming_every_way_to_give_one():
    with pytest.raises(UseCaseError) as raised:
        resolve_use_case(environ=NO_ENV)
    message = str(raised.value)
    for way in ("--use-case", "--use-case-file", names.USE_CASE_ENV, names.USE_CASE_FILE_ENV, "extrusion"):
        assert way in message


def test_options_come_first_then_the_environment(tmp_path):
    path = own_use_case(tmp_path)
    environ = {names.USE_CASE_FILE_ENV: str(path)}
    assert resolve_use_case(environ=environ).use_case == "byo_line"
    assert resolve_use_case(environ={names.USE_CASE_ENV: "extrusion"}).use_case == "extrusion"
    assert resolve_use_case("injection_molding", environ=environ).use_case == "injection_molding"
    assert resolve_use_case("byo_line", path, environ=NO_ENV).use_case == "byo_line"  # both, agreeing
    with pytest.raises(UseCaseError, match=f"{names.USE_CASE_FILE_ENV}='/nowhere.yaml': no such file"):
        resolve_use_case(environ={names.USE_CASE_FILE_ENV: "/nowhere.yaml", names.USE_CASE_ENV: "extrusion"})


def test_a_name_and_a_file_must_agree_and_a_name_must_be_packaged(tmp_path):
    path = own_use_case(tmp_path)
    with pytest.raises(UseCaseError, match=r"--use-case='extrusion' but --use-case-file='.*' is use_case='byo_line'"):
        resolve_use_case("extrusion", path, environ=NO_ENV)
    with pytest.raises(UseCaseError, match=r"--use-case='welding' is not a packaged use case \(extrusion, "):
        resolve_use_case("welding", environ=NO_ENV)
    with pytest.raises(UseCaseError, match=r"--use-case='../etc/x' is not a use-case name"):
        resolve_use_case("../etc/x", environ=NO_ENV)


# --- the functions' settings ----------------------------------------------------------------------


def test_a_data_path_function_has_no_default_use_case(tmp_path):
    from edgeloop.functions.metric_packer.settings import Settings

    bucket = {names.DATA_BUCKET_ENV: "data-bucket"}
    with pytest.raises(ValueError) as raised:
        Settings.from_env(bucket)
    assert f"neither {names.USE_CASE_ENV} nor {names.USE_CASE_FILE_ENV} is set" in str(raised.value)
    path = own_use_case(tmp_path)
    settings = Settings.from_env({**bucket, names.USE_CASE_FILE_ENV: str(path)})
    assert settings.use_case_config == load_use_case_file(path) and settings.use_case == "byo_line"
    both = {**bucket, names.USE_CASE_FILE_ENV: str(path), names.USE_CASE_ENV: "byo_line"}  # what the stack sets
    assert Settings.from_env(both).use_case_config.use_case == "byo_line"
    assert Settings.from_env({**bucket, names.USE_CASE_ENV: "extrusion"}).use_case_config == load_use_case("extrusion")


def test_an_invalid_use_case_file_fails_the_settings_naming_variable_file_and_field(tmp_path):
    from edgeloop.functions.ingest.settings import Settings

    path = own_use_case(tmp_path, label_window_s=0)
    with pytest.raises(ValueError) as raised:
        Settings.from_env({names.DATA_BUCKET_ENV: "data-bucket", names.USE_CASE_FILE_ENV: str(path)})
    message = str(raised.value)
    assert f"{names.USE_CASE_FILE_ENV}='{path}'" in message and "label_window_s=0" in message
    valid = own_use_case(tmp_path, filename="valid.yaml")
    with pytest.raises(ValueError, match=f"{names.USE_CASE_ENV}='extrusion' but {names.USE_CASE_FILE_ENV}="):
        Settings.from_env(
            {names.DATA_BUCKET_ENV: "b-1", names.USE_CASE_FILE_ENV: str(valid), names.USE_CASE_ENV: "extrusion"}
        )


# --- the CLI, run-local and the steps ---------------------------------------------------------------


@pytest.fixture
def fake_local_run(monkeypatch):
    calls = []

    def run_local(**kwargs):
        calls.append(kwargs)
        return [
            types.SimpleNamespace(line_id="line-1", passed=True, reason="ok", model_package_arn="arn:1", metrics={})
        ]

    module = types.ModuleType("edgeloop.sagemaker_pipelines.local_run")
    module.run_local = run_local
    monkeypatch.setitem(sys.modules, "edgeloop.sagemaker_pipelines.local_run", module)
    return calls


def test_run_local_takes_a_use_case_file(fake_local_run, tmp_path):
    path = own_use_case(tmp_path)
    args = ["pipeline", "run-local", "--use-case-file", str(path), "--line", "line-1", "--work-dir", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "use case byo_line" in result.output
    (call,) = fake_local_run
    assert call["use_case_file"] == path and call["use_case"] is None


@pytest.mark.parametrize(
    "command",
    [
        ["pipeline", "run-local", "--line", "line-1"],
        ["pipeline", "start", "--line", "line-1"],
        ["pipeline", "definition"],
        ["gateway", "provision", "gw-1", "--site", "s", "--line", "line-1", "--arch", "aarch64"],
    ],
)
def test_commands_refuse_an_invalid_file_or_none_before_doing_anything(fake_local_run, tmp_path, command):
    path = own_use_case(tmp_path, example_stride_s=-1)
    result = runner.invoke(app, [*command, "--use-case-file", str(path)])
    assert result.exit_code == 2
    assert f"--use-case-file='{path}'" in result.output and "example_stride_s=-1" in result.output
    result = runner.invoke(app, command)
    assert result.exit_code == 2 and "no use case" in result.output and names.USE_CASE_FILE_ENV in result.output
    assert fake_local_run == []


def test_start_names_the_pipeline_of_the_files_use_case(monkeypatch, tmp_path):
    from edgeloop.cli import pipeline as pipeline_cli

    started = []
    monkeypatch.setattr(pipeline_cli, "start_pipeline", lambda **kwargs: started.append(kwargs) or "arn:execution")
    path = own_use_case(tmp_path)
    args = ["pipeline", "start", "--use-case-file", str(path), "--line", "line-1", "--code-version", "abc"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert started[0]["use_case"] == "byo_line"


def test_the_steps_get_the_file_and_resolve_it_as_the_cli_does(tmp_path):
    from edgeloop.sagemaker_pipelines import local_run
    from edgeloop.sagemaker_pipelines.steps import dataset

    path = own_use_case(tmp_path, pack_window_s=0)
    assert local_run.use_case_arguments(None, path) == ["--use-case-file", str(path.resolve())]
    assert local_run.use_case_arguments("extrusion", None) == ["--use-case", "extrusion"]
    # the step refuses the bad file before it reads any data (no bucket exists here)
    with pytest.raises(UseCaseError, match=r"--use-case-file='.*my line.yaml': pack_window_s=0"):
        dataset.main(["--data-bucket", "no-such-bucket", "--line-id", "line-1", "--use-case-file", str(path)])
    with pytest.raises(UseCaseError, match="pack_window_s=0"):
        local_run.run_local(
            use_case_file=path,
            line_ids=["line-1"],
            start=None,
            end=None,
            data_bucket="b-1",
            model_bucket="m-1",
            work_dir=tmp_path,
        )
