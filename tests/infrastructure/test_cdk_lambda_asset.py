"""The staged Lambda asset: layout, determinism, exclusions, and that handlers import from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from edgeloop.cdk.lambda_asset import (
    LAMBDA_PYTHON,
    LAMBDA_TASK_ROOT,
    bytecode_interpreter,
    handler_package,
    package_dir,
    stage_lambda_asset,
    tree_hash,
)
from edgeloop.schemas import load_use_case, names
from edgeloop.schemas.use_case import USE_CASES_DIR, UseCaseConfig

# Functions that run with the Powertools layer only (no pandas/numpy/pyarrow in their runtime).
POWERTOOLS_ONLY = ("ingest", "device_registry", "status_intake", "orchestrator", "hot_path")


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    return stage_lambda_asset(tmp_path_factory.mktemp("staging"))


def test_layout_holds_schemas_functions_and_use_cases(staged):
    root = staged / names.PROJECT
    assert (root / "__init__.py").is_file()
    assert "cli" not in (root / "__init__.py").read_text()
    assert not (root / "cli.py").exists() and not (root / "local").exists()
    assert (root / "schemas" / "names.py").read_bytes() == (package_dir("edgeloop.schemas") / "names.py").read_bytes()
    for handler in names.FUNCTIONS.values():
        assert (root / "functions" / handler_package(handler)).is_dir(), handler
    assert (root / "cloud" / "aws.py").is_file() and (root / "model_runtime" / "features.py").is_file()
    assert not (root / "greengrass_components").exists() and not (root / "device_shims").exists()
    assert (root / "sagemaker_pipelines" / "__init__.py").is_file()
    assert (root / "sagemaker_pipelines" / "use_cases" / "__init__.py").is_file()


def test_use_cases_are_converted_to_equal_json(staged):
    use_cases = staged / names.PROJECT / "sagemaker_pipelines" / "use_cases"
    yaml_names = sorted(p.stem for p in USE_CASES_DIR.glob("*.yaml"))
    assert yaml_names and sorted(p.stem for p in use_cases.glob("*.json")) == yaml_names
    assert not list(use_cases.glob("*.yaml"))
    for name in yaml_names:
        from_json = UseCaseConfig.model_validate(json.loads((use_cases / f"{name}.json").read_text()))
        assert from_json == load_use_case(name)


CACHE_TAG = f"cpython-{LAMBDA_PYTHON[0]}{LAMBDA_PYTHON[1]}"


def test_every_module_is_precompiled_for_the_runtime_python(staged):
    sources = sorted(staged.rglob("*.py"))
    compiled = sorted(staged.rglob("*.pyc"))
    assert sources and len(compiled) == len(sources)
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.{CACHE_TAG}.pyc"
        assert pyc.is_file(), source
    assert not list(staged.rglob("*.pyo")) and not list(staged.rglob("*.opt-*.pyc"))


def test_bytecode_is_unchecked_hash_based_and_names_the_task_root(staged):
    """Flags 0b01 (PEP 552: hash-based, not checked against the source): no mtime in the file, and
    Lambda's read-only task root never needs a rewrite; the source path is /var/task, not staging."""
    pyc = staged / names.PROJECT / "functions" / "ingest" / "__pycache__" / f"handler.{CACHE_TAG}.pyc"
    data = pyc.read_bytes()
    assert int.from_bytes(data[4:8], "little") == 0b01
    if sys.version_info[:2] == LAMBDA_PYTHON:
        import marshal

        code = marshal.loads(data[16:])
        assert code.co_filename == f"{LAMBDA_TASK_ROOT}/{names.PROJECT}/functions/ingest/handler.py"


def test_bytecode_interpreter_is_of_the_runtime_minor_version(monkeypatch):
    interpreter = bytecode_interpreter()
    version = subprocess.run(
        [interpreter, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tuple(map(int, version)) == LAMBDA_PYTHON
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match=r"the Lambda runtime is Python 3\.7 but this synth runs Python 3\.\d+"):
        bytecode_interpreter((3, 7))


def test_bytecode_interpreter_skips_a_python_on_path_that_does_not_run_as_its_name_says(tmp_path, monkeypatch):
    """Like a pyenv shim of an installed but unselected version: found on PATH, fails when run."""
    broken, working = tmp_path / "broken", tmp_path / "working"
    for folder, script in ((broken, "echo 'pyenv: python3.7: command not found' >&2; exit 127"), (working, "echo 3 7")):
        folder.mkdir()
        (folder / "python3.7").write_text(f"#!/bin/sh\n{script}\n")
        (folder / "python3.7").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(broken), str(working)]))
    assert bytecode_interpreter((3, 7)) == str(working / "python3.7")


def test_caches_in_the_source_are_left_out(tmp_path):
    functions = tmp_path / "functions"
    shutil.copytree(package_dir("edgeloop.functions"), functions)
    (functions / "ingest" / "__pycache__").mkdir(exist_ok=True)
    (functions / "ingest" / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"\0")
    (functions / "ingest" / "stale.pyc").write_bytes(b"\0")
    staged = stage_lambda_asset(tmp_path / "out", functions_dir=functions)
    assert not list(staged.rglob("stale*"))
    assert {p.parent.name for p in staged.rglob("*.pyc")} == {"__pycache__"}


def test_staging_is_content_addressed(tmp_path, staged):
    again = stage_lambda_asset(tmp_path / "out")
    assert again.name == staged.name  # same bytes (bytecode included), same directory name
    assert tree_hash(again) == tree_hash(staged)
    functions = tmp_path / "functions"
    shutil.copytree(package_dir("edgeloop.functions"), functions)
    (functions / "ingest" / "logic.py").write_text((functions / "ingest" / "logic.py").read_text() + "\n# changed\n")
    changed = stage_lambda_asset(tmp_path / "out", functions_dir=functions)
    assert changed.name != again.name
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([again.name, changed.name])


def test_a_missing_handler_folder_fails_staging(tmp_path):
    with pytest.raises(ValueError, match="no_such_function"):
        stage_lambda_asset(tmp_path, handlers=["edgeloop.functions.no_such_function.handler.lambda_handler"])
    with pytest.raises(ValueError, match="is not 'edgeloop.functions"):
        handler_package("somewhere.else.handler")


_IMPORT_CHECK = textwrap.dedent(
    """
    import importlib, os, sys
    asset, site_packages, handler, blocked = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ImportError(f"{name} is not in this function's runtime")

    sys.meta_path.insert(0, Blocker())
    sys.path[:0] = [asset]
    sys.path.append(site_packages)
    module_name, function_name = handler.rsplit(".", 1)
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function_name)), handler
    assert module.__file__.startswith(asset), module.__file__
    # and what a handler imports only when invoked (ingest defers its invocation module): every
    # module of the function's package must import with the same path and blocks
    package = module_name.rsplit(".", 1)[0]
    folder = os.path.dirname(module.__file__)
    for name in sorted(n[:-3] for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py"):
        importlib.import_module(f"{package}.{name}")
    """
)


@pytest.mark.parametrize("key", sorted(names.FUNCTIONS))
def test_handlers_import_from_the_asset_with_only_their_layers(staged, key):
    """Python without site processing (no editable install of edgeloop): only the asset and
    third-party packages; pandas & co. are blocked for functions without the pandas layer."""
    blocked = ["yaml", "typer", "rich"] + (["pandas", "numpy", "pyarrow", "duckdb"] if key in POWERTOOLS_ONLY else [])
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            _IMPORT_CHECK,
            str(staged),
            sysconfig.get_paths()["purelib"],
            names.FUNCTIONS[key],
            ",".join(blocked),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "eu-west-1", "POWERTOOLS_TRACE_DISABLED": "true"},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_cdk_asset_hash_is_stable_across_stagings(tmp_path, staged):
    """Two stagings into different places (each compiles its bytecode in a fresh interpreter) give CDK
    the same fingerprint: an unchanged tree never redeploys the functions."""
    from aws_cdk import FileSystem

    again = stage_lambda_asset(tmp_path / "elsewhere")
    assert again != staged and list(again.rglob("*.pyc"))
    assert FileSystem.fingerprint(str(again)) == FileSystem.fingerprint(str(staged))
