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

The directory is named after a hash of its content, so an unchanged tree stages to the same path
and CDK's asset hash (and the deployed code) only changes when the code does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edgeloop.schemas import names
from edgeloop.schemas.use_case import USE_CASES_DIR, UseCaseConfig

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
) -> Path:
    """Stage the Lambda code under `out_dir` and return its content-hashed directory.

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
