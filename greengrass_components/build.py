"""Build the Greengrass components in GDK's layout: `python -m edgeloop.greengrass_components.build [OUT_DIR]`.

Per component, writes
  OUT_DIR/greengrass-build/recipes/<name>.yaml                 (COMPONENT_NAME/VERSION resolved;
                                                                BUCKET_NAME stays for `gdk component publish`)
  OUT_DIR/greengrass-build/artifacts/<name>/<version>/<name>.zip
The zip holds the component's edgeloop packages and every edgeloop module they import (found by
reading their imports), under `edgeloop/...`, so PYTHONPATH=<decompressed dir> makes them importable.

One version: every component is built and published at the package version (schemas/version.py PACKAGE_VERSION,
which pyproject.toml reads too). The recipes in the repository hold placeholders for it:
ComponentVersion is COMPONENT_VERSION, and a dependency on another edgeloop component is
COMPATIBLE_VERSION_RANGE, which resolves to `compatible_range(version)`. The CDK stack
(cdk/constructs/components.py) publishes the same resolved recipes with the artifact URIs of its
assets; tests/infrastructure/test_cdk_components.py fails when recipes, ranges, template and the
orchestrator's environment disagree.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

import yaml

from edgeloop.schemas import names
from edgeloop.schemas.module_closure import edgeloop_modules
from edgeloop.schemas.use_case import USE_CASES_DIR
from edgeloop.schemas.version import PACKAGE_VERSION

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

# The packages each component runs (the first one holds its __main__), plus the contracts whole;
# their edgeloop imports are followed from there.
COMPONENT_PACKAGES = {
    names.GATEWAY_COMPONENT: ("edgeloop.greengrass_components.gateway", "edgeloop.schemas"),
    names.MODEL_RUNNER_COMPONENT: ("edgeloop.greengrass_components.model_runner", "edgeloop.schemas"),
}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip bytes
# Placeholders of the recipes in the repository (besides GDK's BUCKET_NAME and COMPONENT_NAME).
VERSION_PLACEHOLDER = "COMPONENT_VERSION"
RANGE_PLACEHOLDER = "COMPATIBLE_VERSION_RANGE"
DECOMPRESSED_PATH = "{artifacts:decompressedPath}"


def recipe_path(component: str) -> Path:
    return RECIPES_DIR / f"{component}.yaml"


def load_recipe(component: str) -> dict:
    return yaml.safe_load(recipe_path(component).read_text())


def module_closure(packages: tuple[str, ...]) -> dict[str, Path]:
    """Every edgeloop module the packages need (with their parent packages): module -> file."""
    return edgeloop_modules(packages)[0]


# Files a module reads at run time: imports cannot reveal them, so they are listed here.
# module -> (source folder, glob, folder in the archive)
_MODULE_DATA = {
    "edgeloop.schemas.use_case": (USE_CASES_DIR, "*.yaml", "edgeloop/sagemaker_pipelines/use_cases"),
}


def _data_files(modules: Iterable[str]) -> dict[str, Path]:
    files = {}
    for module in modules:
        if module in _MODULE_DATA:
            source, pattern, folder = _MODULE_DATA[module]
            files.update({f"{folder}/{path.name}": path for path in sorted(source.glob(pattern))})
    return files


def _archive_name(module: str, path: Path) -> str:
    stem = module.replace(".", "/")
    return f"{stem}/__init__.py" if path.name == "__init__.py" else f"{stem}.py"


def write_artifact(component: str, zip_path: Path) -> Path:
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    modules = module_closure(COMPONENT_PACKAGES[component])
    entries = {_archive_name(module, path): path for module, path in modules.items()} | _data_files(modules)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name].read_bytes())
    return zip_path


def compatible_range(version: str) -> str:
    """The Greengrass VersionRequirement one edgeloop component puts on another of the same
    release: the same major version, from this minor version on (0.1.3 -> ">=0.1.0 <1.0.0")."""
    major, minor, _patch = (int(part) for part in version.split("-")[0].split("+")[0].split("."))
    return f">={major}.{minor}.0 <{major + 1}.0.0"


def artifact_folder(uri: str) -> str:
    """Where the nucleus unarchives a ZIP artifact, under {artifacts:decompressedPath}: the file name
    of the URI without its extension (aws-greengrass-nucleus ComponentManager.getFileName)."""
    file_name = uri.rsplit("/", 1)[-1]
    return file_name[: file_name.rindex(".")] if file_name.find(".") > 0 else file_name


def resolved_recipe(component: str, version: str = PACKAGE_VERSION, artifact_uri: str | None = None) -> dict:
    """The repository's recipe with its placeholders filled: the version, the ranges on the other
    edgeloop components, and the artifact URIs (GDK's layout with BUCKET_NAME left for `gdk
    component publish`, or `artifact_uri`, whose file name then also names the run step's folder)."""
    recipe = load_recipe(component)
    if recipe["ComponentVersion"] != VERSION_PLACEHOLDER:
        raise ValueError(f"{component}: ComponentVersion must be {VERSION_PLACEHOLDER} (the package version fills it)")
    recipe["ComponentVersion"] = version
    for dependency, spec in recipe.get("ComponentDependencies", {}).items():
        if dependency in COMPONENT_PACKAGES:
            if spec["VersionRequirement"] != RANGE_PLACEHOLDER:
                raise ValueError(f"{component}: the requirement on {dependency} must be {RANGE_PLACEHOLDER}")
            spec["VersionRequirement"] = compatible_range(version)
    for manifest in recipe["Manifests"]:
        (artifact,) = manifest["Artifacts"]
        gdk_uri = artifact["URI"].replace("COMPONENT_NAME", component).replace(VERSION_PLACEHOLDER, version)
        artifact["URI"] = artifact_uri or gdk_uri
        folders = (
            f"{DECOMPRESSED_PATH}/{artifact_folder(gdk_uri)}",
            f"{DECOMPRESSED_PATH}/{artifact_folder(artifact['URI'])}",
        )
        for step in manifest["Lifecycle"].values():
            if isinstance(step, dict) and "Script" in step:
                step["Script"] = step["Script"].replace(*folders)
    return recipe


def build_components(out_dir: Path, version: str = PACKAGE_VERSION) -> list[Path]:
    """Build every component into out_dir/greengrass-build; returns the recipe and zip paths written."""
    build = Path(out_dir) / "greengrass-build"
    written: list[Path] = []
    for component in COMPONENT_PACKAGES:
        recipe = build / "recipes" / f"{component}.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(yaml.safe_dump(resolved_recipe(component, version), sort_keys=False, width=120))
        artifact = write_artifact(component, build / "artifacts" / component / version / f"{component}.zip")
        written += [recipe, artifact]
    return written


if __name__ == "__main__":
    for built in build_components(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()):
        print(built)
