"""The step image's `train` (sagemaker_pipelines/container/train): SageMaker's bring-your-own layout in,
per-line models out; and the training job's model.tar.gz as Evaluate's and Register's input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from synthetic_line_examples import synthetic_examples

from edgeloop.cloud.model_registry import load_manifest
from edgeloop.sagemaker_pipelines.steps import evaluate as evaluate_step
from edgeloop.sagemaker_pipelines.steps import register as register_step
from edgeloop.sagemaker_pipelines.steps import train as train_step
from edgeloop.sagemaker_pipelines.steps.dataset import DatasetInfo, reference_split
from edgeloop.sagemaker_pipelines.steps.search import draw_candidates
from edgeloop.schemas import load_use_case, names

REPOSITORY = Path(__file__).resolve().parents[3]
TRAIN_SCRIPT = REPOSITORY / "sagemaker_pipelines" / "container" / "train"
LINES = ("line-1", "line-2")
SEED = 7  # not the use case's training.seed (0): the draws show which one was used
MODEL_BUCKET = "edgeloop-models-container-test"


@pytest.fixture(scope="module")
def config():
    return load_use_case("extrusion")


@pytest.fixture(scope="module")
def splits(config) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """(train, reference) per line, as the dataset step splits them."""
    return {
        line: reference_split(synthetic_examples(config, line_id=line, n=320, seed=i), config)
        for i, line in enumerate(LINES)
    }


def sagemaker_root(root: Path, examples: pd.DataFrame, hyperparameters: dict[str, str]) -> Path:
    """A stand-in for /opt/ml as SageMaker prepares it before `<image> train`."""
    channel = root / "input" / "data" / "train"
    channel.mkdir(parents=True)
    examples.to_parquet(channel / "examples.parquet", index=False)
    config_dir = root / "input" / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return root


def run_train(root: Path, *extra_args: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        # `python` in the script's shebang and command is this interpreter, as in the image
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "EDGELOOP_SAGEMAKER_ROOT": str(root),
    }
    return subprocess.run(
        [str(TRAIN_SCRIPT), *extra_args], env=environment, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory, splits) -> Path:
    examples = pd.concat([train for train, _ in splits.values()], ignore_index=True)
    hyperparameters = {"use-case": "extrusion", "candidates-per-template": "2", "seed": str(SEED)}
    root = sagemaker_root(tmp_path_factory.mktemp("opt-ml"), examples, hyperparameters)
    result = run_train(root)
    assert result.returncode == 0, f"train failed:\n{result.stdout}\n{result.stderr}"
    return root


@pytest.fixture(scope="module")
def model_archive(trained_root, tmp_path_factory) -> Path:
    """What SageMaker uploads of /opt/ml/model: its contents as model.tar.gz (the processing input's file)."""
    directory = tmp_path_factory.mktemp("processing-model")
    archive = directory / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted((trained_root / "model").iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive


def chosen_draw(saved_line_dir: Path) -> tuple[str, dict]:
    chosen = json.loads((saved_line_dir / train_step.TRAINED_INFO_FILE).read_text())["search_summary"]["chosen"]
    return chosen["template"], chosen["params"]


def drawn(config, candidates_per_template: int, seed: int) -> list[tuple[str, dict]]:
    return [(template.tag.value, params) for template, params in draw_candidates(config, candidates_per_template, seed)]


def test_the_script_is_an_executable_the_image_installs_as_train():
    assert os.access(TRAIN_SCRIPT, os.X_OK), f"{TRAIN_SCRIPT} must be executable (SageMaker runs `train`)"
    dockerfile = (REPOSITORY / "sagemaker_pipelines" / "Dockerfile").read_text()
    assert "sagemaker_pipelines/container/train /usr/local/bin/train" in dockerfile
    instructions = [line.split()[0].upper() for line in dockerfile.splitlines() if line.strip() and line[0] != "#"]
    assert "ENTRYPOINT" not in instructions, "an ENTRYPOINT would swallow the training job's `train` argument"


def test_train_writes_one_saved_model_per_line_under_the_model_dir(trained_root):
    model_dir = trained_root / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == list(LINES)
    for line in LINES:
        saved = {p.name for p in (model_dir / line).iterdir()}
        assert {train_step.BOOSTER_FILE, train_step.TEST_SET_FILE, train_step.TRAINED_INFO_FILE} <= saved
        assert train_step.load_trained(model_dir / line).feature_names == load_use_case("extrusion").feature_names
    assert not (trained_root / "output" / "failure").exists()


def test_train_honours_the_hyperparameters(trained_root, config):
    summary = json.loads((trained_root / "model" / "line-1" / train_step.TRAINED_INFO_FILE).read_text())[
        "search_summary"
    ]
    assert summary["candidates_per_template"] == {t.value: 2 for t in config.training.templates}
    # the chosen candidate is one of seed 7's draws, and none of the use case's default seed's
    assert chosen_draw(trained_root / "model" / "line-1") in drawn(config, 2, SEED)
    assert chosen_draw(trained_root / "model" / "line-1") not in drawn(config, 2, config.training.seed)


def test_a_failing_job_leaves_its_reason_where_sagemaker_reads_it(tmp_path, splits):
    examples, _ = splits["line-1"]
    root = sagemaker_root(tmp_path, examples, {"use-case": "no-such-use-case"})
    result = run_train(root)
    assert result.returncode != 0
    failure = (root / "output" / "failure").read_text()
    assert "no-such-use-case" in failure
    assert not any((root / "model").glob("*")), "a failed job saves no model"


def test_command_line_flags_win_over_the_hyperparameters_file(tmp_path, splits, config):
    examples, _ = splits["line-1"]
    hyperparameters = tmp_path / "hyperparameters.json"
    hyperparameters.write_text(json.dumps({"candidates-per-template": "2", "seed": str(SEED)}))
    examples.to_parquet(tmp_path / "examples.parquet", index=False)
    saved = train_step.main(
        ["--examples", str(tmp_path / "examples.parquet"), "--output", str(tmp_path / "model"),
         "--sagemaker-hyperparameters", str(hyperparameters), "--candidates-per-template", "1"]
    )  # fmt: skip
    summary = train_step.load_trained(saved["line-1"]).search_summary
    assert summary["candidates_per_template"] == {t.value: 1 for t in config.training.templates}
    assert chosen_draw(saved["line-1"]) in drawn(config, 1, SEED)  # the file's seed still applies


def test_hyperparameters_become_flags_and_sagemaker_keys_are_left_out(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({"use-case": "extrusion", "seed": "3", "sagemaker_job_name": "x", "_tuning": "y"}))
    assert train_step.hyperparameter_argv(path) == ["--use-case", "extrusion", "--seed", "3"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"examples": "/tmp/elsewhere"}, "hyperparameter examples='/tmp/elsewhere'"),
        ({"seed": ["1"]}, "hyperparameter seed=['1']"),
        (["seed", "1"], "expected a JSON object, got list"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_key_and_value(tmp_path, document, message):
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train_step.hyperparameter_argv(path)


def test_a_hyperparameter_of_the_wrong_type_is_refused_naming_it(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({"seed": "seven"}))
    with pytest.raises(SystemExit):
        train_step.main(["--examples", str(tmp_path), "--sagemaker-hyperparameters", str(path)])


def test_a_missing_hyperparameters_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="hyperparameters.json: no such file"):
        train_step.hyperparameter_argv(tmp_path / "hyperparameters.json")


# --- model.tar.gz into the evaluate and register steps -------------------------------------------


def dataset_dir(directory: Path, line: str, splits) -> Path:
    """The dataset step's dataset/ and reference/ outputs of one line."""
    train, reference = splits[line]
    directory.mkdir(parents=True)
    reference.to_parquet(directory / "examples.parquet", index=False)
    info = DatasetInfo(
        line_id=line, use_case="extrusion", start=None, end=None, rows_train=len(train),
        rows_reference=len(reference), content_sha256="a" * 64, train_sha256="b" * 64, reference_sha256="c" * 64,
        data_start=train["window_start"].min(), data_end=reference["window_end"].max(),
    )  # fmt: skip
    (directory / "dataset.json").write_text(info.model_dump_json())
    return directory


def test_evaluate_and_register_take_the_training_jobs_model_archive(
    registry, model_archive, splits, tmp_path, monkeypatch
):
    monkeypatch.delenv(names.MODEL_SIGNING_KEY_ENV, raising=False)
    monkeypatch.delenv(names.MODEL_SIGNING_KEY_SECRET_ARN_ENV, raising=False)
    dataset = dataset_dir(tmp_path / "dataset", "line-2", splits)
    # the pipeline's processing input of the model.tar.gz object: a directory holding it
    report = evaluate_step.main(
        ["--model", str(model_archive.parent), "--reference", str(dataset), "--dataset", str(dataset),
         "--use-case", "extrusion", "--model-bucket", MODEL_BUCKET, "--output", str(tmp_path / "evaluation")]
    )  # fmt: skip
    assert report.line_id == "line-2" and report.passed, report.reason
    arns = register_step.main(
        ["--trained", str(model_archive.parent), "--model-bucket", MODEL_BUCKET, "--use-case", "extrusion",
         "--version", "1.0.0", "--dataset", str(dataset), "--evaluation", str(tmp_path / "evaluation"),
         "--code-version", "abc123"]
    )  # fmt: skip
    assert list(arns) == ["line-2"]
    package = registry.describe_model_package(ModelPackageName=arns["line-2"])
    assert package["ModelPackageGroupName"] == names.model_package_group_name("extrusion", "line-2")
    manifest = load_manifest(package["CustomerMetadataProperties"][names.MANIFEST_URI_METADATA_KEY])
    trained = train_step.load_trained(evaluate_step.unpack_trained(model_archive, tmp_path / "unpacked") / "line-2")
    assert manifest.training_data_sha256 == trained.training_data_sha256
    # the archive itself works as --trained too; without --dataset every line in it is registered
    arns = register_step.main(["--trained", str(model_archive), "--model-bucket", MODEL_BUCKET, "--version", "1.0.1"])
    assert sorted(arns) == list(LINES)


def test_a_model_path_that_is_no_archive_is_refused_naming_it(tmp_path):
    not_an_archive = tmp_path / "model.tar.gz"
    not_an_archive.write_text("not a tar")
    with pytest.raises(ValueError, match="model.tar.gz: not a readable model archive"):
        evaluate_step.unpack_trained(not_an_archive, tmp_path / "unpacked")
    with pytest.raises(FileNotFoundError, match="neither a directory nor a model.tar.gz"):
        evaluate_step.unpack_trained(tmp_path / "missing.txt", tmp_path / "unpacked")
