"""The code archive the pipeline's steps run from: sourcedir.tar.gz, built without Docker.

SageMaker's XGBoost container (steps/images.py) runs it in script mode, so nothing is built into an image:

    edgeloop/__init__.py, edgeloop/<package>/...   every edgeloop module the step modules import (found
                                                   by reading imports), the use-case YAML files and
                                                   steps/xgboost_images.json
    use-case.json                                  only with a use-case file (`code-archive --use-case-file`,
                                                   -c edgeloop:useCaseFile): that use case, validated, as
                                                   JSON; the steps read it through EDGELOOP_USE_CASE_FILE
    requirements.txt                               the third-party distributions those modules import,
                                                   pinned to constraints.txt (the versions the tests ran)
    setup.py                                       installs nothing but the package version (see SETUP_PY)

Training job: the container's toolkit (sagemaker-containers) downloads the archive named by the
hyperparameter sagemaker_submit_directory into /opt/ml/code, runs `pip install . -r requirements.txt`
there and then `python -m <sagemaker_program>` in that directory. Processing jobs do the same through
step_builder.PROCESSING_BOOTSTRAP. Same bytes for the same sources (sorted entries, fixed times and
owners): the CDK asset, and so the deployed CodeS3Uri, change only when the code does.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import re
import sys
import tarfile
from pathlib import Path

from edgeloop.schemas import names
from edgeloop.schemas.module_closure import edgeloop_modules
from edgeloop.schemas.use_case import USE_CASES_DIR, UseCaseConfig

from .steps.images import IMAGES_FILE

ROOT = names.PROJECT
# What the pipeline runs: `python -m edgeloop.sagemaker_pipelines.steps.<step>`; and the contracts
# whole, since edgeloop.schemas imports its names by module name on first use (PEP 562), which
# reading import statements cannot follow.
STEP_PACKAGE = f"{ROOT}.sagemaker_pipelines.steps"
ARCHIVE_PACKAGES = (STEP_PACKAGE, f"{ROOT}.schemas")
CONSTRAINTS_FILE = Path(__file__).resolve().parents[1] / "constraints.txt"
ARCHIVE_NAME = "sourcedir.tar.gz"
# The container's framework: its XGBoost is the one the images are named after (steps/images.py), so the
# archive must not install a second copy (xgboost-cpu is the same `xgboost` module without CUDA).
PROVIDED_BY_CONTAINER = frozenset({"xgboost", "xgboost-cpu"})
ROOT_INIT = '"""edgeloop\'s pipeline step code (built by edgeloop.sagemaker_pipelines.step_code)."""\n'
# The toolkit runs `pip install .` on the archive and writes a setup.py of its own when there is none
# (one that installs every file as a package). This one installs no module (the code runs from
# /opt/ml/code) and records the edgeloop version, which the register step stores as the code version.
SETUP_PY = 'from setuptools import setup\n\nsetup(name="{name}", version="{version}", packages=[], py_modules=[])\n'
_MTIME = 0  # fixed entry and gzip times: same sources, same bytes


def module_closure(packages: tuple[str, ...] = ARCHIVE_PACKAGES) -> tuple[dict[str, Path], set[str]]:
    """(every edgeloop module the packages need -> its file, the top-level names of other imports)."""
    files, external = edgeloop_modules(packages)
    return files, external - set(sys.stdlib_module_names)


def pinned_requirements(import_names: set[str], constraints: Path = CONSTRAINTS_FILE) -> list[str]:
    """`dist==version` per distribution the import names come from, versions from constraints.txt."""
    pins = _constraints(constraints)
    providers = importlib.metadata.packages_distributions()
    lines = set()
    for name in sorted(import_names):
        distributions = {_canonical(d) for d in providers.get(name, [])} - PROVIDED_BY_CONTAINER
        if not distributions and name not in PROVIDED_BY_CONTAINER and not providers.get(name):
            raise ValueError(f"the step code imports {name!r}, which no installed distribution provides")
        for dist in distributions:
            if dist not in pins:
                raise ValueError(f"{dist} (imported as {name!r} by the step code) has no pin in {constraints}")
            lines.add(f"{dist}=={pins[dist]}")
    return sorted(lines)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            dist, version = line.split("==", 1)
            pins[_canonical(dist)] = version.strip()
    return pins


def archive_members(
    packages: tuple[str, ...] = ARCHIVE_PACKAGES, *, use_case: UseCaseConfig | None = None
) -> dict[str, bytes]:
    """Archive path -> content: the modules, the use cases, requirements.txt and setup.py; with
    `use_case` (one loaded from a file), that use case at names.PACKAGED_USE_CASE_FILE."""
    files, external = module_closure(packages)
    members = {f"{ROOT}/__init__.py": ROOT_INIT.encode()}
    for module, path in files.items():
        if module == ROOT:
            continue
        relative = "/".join(module.split(".")) + ("/__init__.py" if path.name == "__init__.py" else ".py")
        members[relative] = path.read_bytes()
    use_cases = f"{ROOT}/{USE_CASES_DIR.parent.name}/{USE_CASES_DIR.name}"
    for source in sorted(USE_CASES_DIR.glob("*.y*ml")):
        members[f"{use_cases}/{source.name}"] = source.read_bytes()
    if use_case is not None:
        members[names.PACKAGED_USE_CASE_FILE] = (use_case.model_dump_json(indent=2) + "\n").encode()
    # what register.py falls back to without --serving-image
    members[f"{ROOT}/sagemaker_pipelines/steps/{IMAGES_FILE.name}"] = IMAGES_FILE.read_bytes()
    members["requirements.txt"] = ("\n".join(pinned_requirements(external)) + "\n").encode()
    version = importlib.metadata.version(names.PROJECT)
    members["setup.py"] = SETUP_PY.format(name=names.PROJECT, version=version).encode()
    return members


def archive_bytes(members: dict[str, bytes]) -> bytes:
    """A gzip'd tar of the members, byte-identical for identical members."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=_MTIME) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(members):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(members[name]), _MTIME, 0o644
                tar.addfile(info, io.BytesIO(members[name]))
    return buffer.getvalue()


def build_archive(out_dir: Path, *, use_case: UseCaseConfig | None = None) -> Path:
    """Write the archive under `out_dir` (named by its content hash) and return its path; with
    `use_case`, it carries that use case at names.PACKAGED_USE_CASE_FILE (see archive_members)."""
    data = archive_bytes(archive_members(use_case=use_case))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"step-code-{hashlib.sha256(data).hexdigest()[:20]}" / ARCHIVE_NAME
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(path)  # a concurrent synth that got there first wrote the same bytes
    return path
