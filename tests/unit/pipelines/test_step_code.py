"""The step code archive (sagemaker_pipelines/step_code.py): what SageMaker's XGBoost container runs.

It holds exactly the edgeloop modules the step modules import, the use cases, a requirements.txt that
pins every third-party distribution they import to constraints.txt (the container's own XGBoost
excepted) and a setup.py that installs no module; the same sources give the same bytes."""

from __future__ import annotations

import ast
import io
import re
import tarfile
from pathlib import Path

import pytest

from edgeloop.sagemaker_pipelines import step_code

CONSTRAINTS = Path(__file__).resolve().parents[3] / "constraints.txt"
STEPS = ("dataset", "train", "evaluate", "register")


@pytest.fixture(scope="module")
def members() -> dict[str, bytes]:
    return step_code.archive_members()


def test_the_archive_holds_every_step_module_and_what_they_import(members):
    for step in STEPS:
        assert f"edgeloop/sagemaker_pipelines/steps/{step}.py" in members
    assert "edgeloop/sagemaker_pipelines/use_cases/extrusion.yaml" in members
    assert "edgeloop/sagemaker_pipelines/steps/xgboost_images.json" in members
    for name in members:
        if name.endswith(".py") and name.startswith("edgeloop/"):
            module = name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            for node in ast.walk(ast.parse(members[name])):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("edgeloop."):
                    target = node.module.replace(".", "/")
                    assert f"{target}.py" in members or f"{target}/__init__.py" in members, (module, node.module)
    # nothing the steps do not run: the CLI, the Lambdas, the gateway, the CDK, the pipeline builder
    tops = {name.split("/")[1] for name in members if name.startswith("edgeloop/") and name.count("/") > 1}
    assert tops == {"schemas", "model_runtime", "cloud", "sagemaker_pipelines"}
    assert not [n for n in members if "/functions/" in n or "/cdk/" in n or n.endswith("step_builder.py")]


def test_requirements_pin_what_the_code_imports_to_the_tested_versions(members):
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", CONSTRAINTS.read_text(), flags=re.MULTILINE))
    pins = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}
    lines = members["requirements.txt"].decode().split()
    assert lines == sorted(lines) and lines
    required = dict(line.split("==") for line in lines)
    for dist, version in required.items():
        assert pins[dist] == version, dist
    assert {"pydantic", "pandas", "numpy", "pyarrow", "boto3", "cryptography", "pyyaml"} <= set(required)
    assert not {"xgboost", "xgboost-cpu"} & set(required)  # the container's framework is that XGBoost
    assert not [d for d in required if d.startswith("sagemaker")]  # the 1 GB SDK is for building, not running


def test_setup_py_installs_no_module_but_records_the_package_version(members):
    import importlib.metadata

    setup = members["setup.py"].decode()
    assert "packages=[]" in setup and "py_modules=[]" in setup
    assert f'version="{importlib.metadata.version("edgeloop")}"' in setup


def test_the_same_sources_give_the_same_bytes(tmp_path, members):
    first = step_code.build_archive(tmp_path / "a")
    second = step_code.build_archive(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes() == step_code.archive_bytes(members)
    assert first.name == "sourcedir.tar.gz" and first.parent.name == second.parent.name
    with tarfile.open(fileobj=io.BytesIO(first.read_bytes()), mode="r:gz") as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == sorted(members)
    assert {(i.mtime, i.uid, i.gid, i.mode) for i in infos} == {(0, 0, 0, 0o644)}


def test_an_import_without_a_pin_is_refused_naming_it(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("numpy==2.4.6\n")
    assert step_code.pinned_requirements({"numpy"}, constraints) == ["numpy==2.4.6"]
    with pytest.raises(ValueError, match=r"pandas \(imported as 'pandas'.*no pin"):
        step_code.pinned_requirements({"pandas"}, constraints)
    with pytest.raises(ValueError, match="'no_such_module_xyz', which no installed distribution provides"):
        step_code.pinned_requirements({"no_such_module_xyz"}, constraints)
