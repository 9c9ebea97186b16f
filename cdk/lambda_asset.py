"""The one code asset every edgeloop Lambda function runs from, staged without Docker.

The functions' third-party dependencies come from public Lambda layers (see constructs/layers.py),
so the asset holds only edgeloop's own code, laid out under the import root the handlers use:

    edgeloop/__init__.py                       (a minimal one: the CLI package stays out)
    edgeloop/schemas/...                       (schemas/)
    edgeloop/model_runtime/...                 (model_runtime/: the features the packer computes)
    edgeloop/cloud/...                         (cloud/: the code the functions share)
    edgeloop/functions/...                     (functions/)
    edgeloop/sagemaker_pipelines/use_cases/<name>.json   (the use-case YAML, as JSON:
                                                load_use_case reads JSON first; no PyYAML in Lambda)
    use-case.json                              (only with -c edgeloop:useCaseFile: that use case,
                                                validated, as JSON; PACKAGED_USE_CASE_PATH in Lambda,
                                                which the stack sets EDGELOOP_USE_CASE_FILE to)

Every module is precompiled (`__pycache__/*.cpython-3XX.pyc`) for the runtime's Python, because
Lambda's code directory is read-only: without them, each cold start compiles edgeloop's modules
again. The .pyc files are written in `unchecked-hash` mode with /var/task as their source path, so
they hold neither a timestamp nor the staging path, and staging the same tree twice gives the same
bytes. The .py files stay beside them (tracebacks show the source lines).

The directory is named after a hash of its content, so an unchanged tree stages to the same path
and CDK's asset hash (and the deployed code) only changes when the code does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edgeloop.schemas import names
from edgeloop.schemas.use_case import USE_CASES_DIR, UseCaseConfig

from .constructs.lambda_runtime import LAMBDA_PYTHON

LAMBDA_TASK_ROOT = "/var/task"  # where Lambda unpacks the code: the source path the .pyc files name
# A use-case file the stack packages (-c edgeloop:useCaseFile), where the functions find it.
PACKAGED_USE_CASE_PATH = f"{LAMBDA_TASK_ROOT}/{names.PACKAGED_USE_CASE_FILE}"

IGNORED_NAMES = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".DS_Store"})
IGNORED_SUFFIXES = (".pyc", ".pyo")
STAGED_PREFIX = "lambda-asset-"

ROOT_INIT = '"""edgeloop\'s Lambda code (staged by edgeloop.cdk.lambda_asset)."""\n'
# What the functions import, in dependency order; edgeloop.local, the CLI and the device code stay out.
LIBRARY_PACKAGES = ("schemas", "model_runtime", "cloud")


def stage_lambda_asset(
    out_dir: str | Path,
    *,
    functions_dir: Path | None = None,
    use_cases_dir: Path = USE_CASES_DIR,
    handlers: Iterable[str] = names.FUNCTIONS.values(),
    use_case: UseCaseConfig | None = None,
) -> Path:
    """Stage the Lambda code under `out_dir` and return its content-hashed directory; with `use_case`
    (loaded from edgeloop:useCaseFile), that use case at names.PACKAGED_USE_CASE_FILE.

    Raises ValueError when a handler in `handlers` has no package folder in functions/, so a
    stack never deploys a function whose code is missing.
    """
    functions_dir = functions_dir or package_dir("edgeloop.functions")
    _check_handler_folders(functions_dir, handlers)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    build.chmod(0o755)  # mkdtemp makes it 0700; Lambda runs the code as a non-owner user
    try:
        _populate(build, functions_dir=functions_dir, use_cases_dir=use_cases_dir)
        if use_case is not None:
            (build / names.PACKAGED_USE_CASE_FILE).write_text(use_case.model_dump_json(indent=2) + "\n")
        precompile(build)
        return _publish(build, out_dir / f"{STAGED_PREFIX}{tree_hash(build)[:20]}")
    finally:
        shutil.rmtree(build, ignore_errors=True)


def package_dir(package: str) -> Path:
    """Where an installed package's folder is, without importing it (functions/ stays unimported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {package!r} is not installed; run `pip install -e .` in the repository")
    return Path(next(iter(spec.submodule_search_locations)))


def handler_package(handler: str) -> str:
    """'edgeloop.functions.ingest.handler.lambda_handler' -> 'ingest'."""
    prefix = "edgeloop.functions."
    parts = handler.split(".")
    if not handler.startswith(prefix) or len(parts) < 5:
        raise ValueError(f"handler={handler!r} is not 'edgeloop.functions.<name>.<module>.<function>'")
    return parts[2]


def tree_hash(root: Path) -> str:
    """sha256 over relative paths and contents, in sorted order (mtimes and owners do not count)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def bytecode_interpreter(version: tuple[int, int] = LAMBDA_PYTHON) -> str:
    """An interpreter of exactly the runtime's minor version: the one running the synth if it is
    one, else the first `python3.<minor>` on PATH that runs and says so (a pyenv shim of a version
    that is installed but not selected does not). A .pyc is only valid for the minor version that
    wrote it, so a synth that finds none fails here rather than ship bytecode Lambda would ignore."""
    if sys.version_info[:2] == version:
        return sys.executable
    name = f"python{version[0]}.{version[1]}"
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory or ".") / name
        if candidate.is_file() and os.access(candidate, os.X_OK) and _runs_as(candidate, version):
            return str(candidate)
    raise RuntimeError(
        f"the Lambda runtime is Python {version[0]}.{version[1]} but this synth runs Python "
        f"{sys.version_info[0]}.{sys.version_info[1]} and no working {name} is on PATH: install Python "
        f"{version[0]}.{version[1]} (or run the synth with it) to precompile the Lambda asset"
    )


def _runs_as(interpreter: Path, version: tuple[int, int]) -> bool:
    probe = [str(interpreter), "-I", "-c", "import sys; print(*sys.version_info[:2])"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.split() == [str(part) for part in version]


def precompile(root: Path, version: tuple[int, int] = LAMBDA_PYTHON) -> None:
    """Write `__pycache__/<module>.cpython-3XX.pyc` for every module under `root`, deterministically."""
    command = [
        bytecode_interpreter(version),
        "-I",
        "-m",
        "compileall",
        "-q",
        "--invalidation-mode",
        "unchecked-hash",
        "-d",
        LAMBDA_TASK_ROOT,
        str(root),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"precompiling the Lambda asset failed: {(result.stdout + result.stderr)[-2000:]}")


def _check_handler_folders(functions_dir: Path, handlers: Iterable[str]) -> None:
    missing = sorted({pkg for pkg in map(handler_package, handlers) if not (functions_dir / pkg).is_dir()})
    if missing:
        raise ValueError(f"handler packages {missing} have no folder in {functions_dir}")


def _populate(build: Path, *, functions_dir: Path, use_cases_dir: Path) -> None:
    root = build / names.PROJECT
    root.mkdir()
    (root / "__init__.py").write_text(ROOT_INIT)
    for package in LIBRARY_PACKAGES:
        _copy_tree(package_dir(f"{names.PROJECT}.{package}"), root / package)
    _copy_tree(functions_dir, root / "functions")
    _write_use_cases(use_cases_dir, root / "sagemaker_pipelines")


def _copy_tree(source: Path, target: Path) -> None:
    def ignore(_directory: str, entries: list[str]) -> set[str]:
        return {e for e in entries if e in IGNORED_NAMES or e.endswith(IGNORED_SUFFIXES)}

    shutil.copytree(source, target, ignore=ignore)


def _write_use_cases(use_cases_dir: Path, pipelines_root: Path) -> None:
    sources = sorted(use_cases_dir.glob("*.yaml")) + sorted(use_cases_dir.glob("*.yml"))
    if not sources:
        raise ValueError(f"no use-case YAML in {use_cases_dir}")
    target = pipelines_root / "use_cases"
    target.mkdir(parents=True)
    (pipelines_root / "__init__.py").write_text("")
    (target / "__init__.py").write_text("")
    for source in sources:
        config = UseCaseConfig.from_file(source)  # validates: a broken use case fails the synth
        if config.use_case != source.stem:
            raise ValueError(f"{source}: use_case={config.use_case!r} differs from the file name {source.stem!r}")
        (target / f"{source.stem}.json").write_text(config.model_dump_json(indent=2) + "\n")


def _publish(build: Path, final: Path) -> Path:
    """Move the build into place; a concurrent synth that got there first staged the same bytes."""
    if final.is_dir():
        return final
    try:
        os.rename(build, final)
    except OSError:
        if not final.is_dir():
            raise
    return final
