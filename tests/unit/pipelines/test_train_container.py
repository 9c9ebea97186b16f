"""The train step as SageMaker's XGBoost container runs it in script mode, from the step code archive:
per-line models out; and the training job's model.tar.gz as Evaluate's and Register's input.

The container's toolkit (sagemaker-containers, legacy script mode) unpacks the archive named by the
hyperparameter sagemaker_submit_directory into /opt/ml/code, pip-installs it, and runs
`python -m <sagemaker_program> --<key> <value> ...` there (the other hyperparameters, keys sorted,
JSON values decoded) with SM_CHANNEL_TRAIN and SM_MODEL_DIR set. `script_mode_train` does the same,
minus the pip install (the test environment has the pinned requirements), with the hyperparameters of
the committed pipeline definition.
"""

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
from edgeloop.sagemaker_pipelines import step_code
from edgeloop.sagemaker_pipelines.pipeline import definition_path
from edgeloop.sagemaker_pipelines.steps import evaluate as evaluate_step
from edgeloop.sagemaker_pipelines.steps import register as register_step
from edgeloop.sagemaker_pipelines.steps import train as train_step
from edgeloop.sagemaker_pipelines.steps.dataset import DatasetInfo, reference_split
from edgeloop.sagemaker_pipelines.steps.search import draw_candidates
from edgeloop.schemas import load_use_case, names

LINES = ("line-1", "line-2")
SEED = 7  # not the use case's training.seed (0): the draws show which one was used
MODEL_BUCKET = "edgeloop-models-container-test"
# the toolkit's own hyperparameters, which it keeps out of the script's arguments
TOOLKIT_KEYS = ("sagemaker_program", "sagemaker_submit_directory", "sagemaker_region")


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


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory) -> Path:
    """/opt/ml/code: the step code archive, unpacked."""
    archive = step_code.build_archive(tmp_path_factory.mktemp("staging"))
    directory = tmp_path_factory.mktemp("opt-ml-code")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(directory, filter="data")
    return directory


def definition_hyperparameters(**values: str) -> dict[str, str]:
    """The Train step's hyperparameters in the committed definition, runtime values filled from `values`."""
    (train,) = [s for s in json.loads(definition_path("extrusion").read_text())["Steps"] if s["Type"] == "Training"]
    filled = {}
    for key, value in train["Arguments"]["HyperParameters"].items():
        filled[key] = value if isinstance(value, str) else values[key]
    return filled


def toolkit_argv(hyperparameters: dict[str, str]) -> list[str]:
    """sagemaker-containers' to_cmd_args: keys sorted, values JSON-decoded when they parse."""
    argv = []
    for key in sorted(k for k in hyperparameters if k not in TOOLKIT_KEYS):
        try:
            value = json.loads(hyperparameters[key])
        except ValueError:
            value = hyperparameters[key]
        argv += [f"--{key}", str(value)]
    return argv


def script_mode_train(code: Path, root: Path, examples: pd.DataFrame, hyperparameters: dict[str, str]):
    channel, model = root / "input" / "data" / "train", root / "model"
    channel.mkdir(parents=True)
    model.mkdir()
    examples.to_parquet(channel / "examples.parquet", index=False)
    environment = {**os.environ, "SM_CHANNEL_TRAIN": str(channel), "SM_MODEL_DIR": str(model)}
    command = [sys.executable, "-m", hyperparameters["sagemaker_program"], *toolkit_argv(hyperparameters)]
    return subprocess.run(command, cwd=code, env=environment, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory, splits, code_dir) -> Path:
    examples = pd.concat([train for train, _ in splits.values()], ignore_index=True)
    hyperparameters = definition_hyperparameters(**{"candidates-per-template": "2"}) | {"seed": str(SEED)}
    root = tmp_path_factory.mktemp("opt-ml")
    result = script_mode_train(code_dir, root, examples, hyperparameters)
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


def test_the_definition_asks_for_script_mode_with_the_train_module_and_the_code_archive():
    hyperparameters = definition_hyperparameters(**{"candidates-per-template": "2"})
    assert hyperparameters["sagemaker_program"] == "edgeloop.sagemaker_pipelines.steps.train"
    assert hyperparameters["sagemaker_submit_directory"] == "${CodeS3Uri}"
    assert toolkit_argv(hyperparameters) == [
        "--candidates-per-template", "2", "--seed", "0", "--use-case", "extrusion"
    ]  # fmt: skip


# every step module and every name the contracts export (imported by name on first use), then the files
IMPORT_EVERYTHING = """
import importlib, sys
import edgeloop.schemas as schemas
for step in ("dataset", "train", "evaluate", "register"):
    importlib.import_module("edgeloop.sagemaker_pipelines.steps." + step)
for name in schemas.__all__:
    getattr(schemas, name)
print("\\n".join(m.__file__ for n, m in sys.modules.items() if n.startswith("edgeloop") and m.__file__))
"""


def test_every_step_module_imports_from_the_unpacked_archive_alone(code_dir):
    """As in the container: the archive's edgeloop, nothing from the checkout (python -m puts the cwd first)."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], cwd=code_dir, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    assert len(files) > 20
    assert all(Path(f).is_relative_to(code_dir) for f in files), [f for f in files if code_dir.name not in f]


def test_train_writes_one_saved_model_per_line_under_the_model_dir(trained_root):
    model_dir = trained_root / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == list(LINES)
    for line in LINES:
        saved = {p.name for p in (model_dir / line).iterdir()}
        assert {train_step.BOOSTER_FILE, train_step.TEST_SET_FILE, train_step.TRAINED_INFO_FILE} <= saved
        assert train_step.load_trained(model_dir / line).feature_names == load_use_case("extrusion").feature_names


def test_train_honours_the_hyperparameters(trained_root, config):
    summary = json.loads((trained_root / "model" / "line-1" / train_step.TRAINED_INFO_FILE).read_text())[
        "search_summary"
    ]
    assert summary["candidates_per_template"] == {t.value: 2 for t in config.training.templates}
    # the chosen candidate is one of seed 7's draws, and none of the use case's default seed's
    assert chosen_draw(trained_root / "model" / "line-1") in drawn(config, 2, SEED)
    assert chosen_draw(trained_root / "model" / "line-1") not in drawn(config, 2, config.training.seed)


def test_a_failing_job_exits_non_zero_naming_the_problem_and_saves_nothing(tmp_path, splits, code_dir):
    examples, _ = splits["line-1"]
    hyperparameters = definition_hyperparameters(**{"candidates-per-template": "1"}) | {"use-case": "no-such-use-case"}
    result = script_mode_train(code_dir, tmp_path, examples, hyperparameters)
    assert result.returncode != 0
    assert "no-such-use-case" in result.stderr  # the toolkit puts the script's stderr in the job's FailureReason
    assert not any((tmp_path / "model").glob("*")), "a failed job saves no model"


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
