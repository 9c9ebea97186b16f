"""Build the Greengrass components in GDK's layout: `python -m edgeloop.greengrass_components.build [OUT_DIR]`.

Per component, writes
  OUT_DIR/greengrass-build/recipes/<name>.yaml                 (COMPONENT_NAME/VERSION resolved;
                                                                BUCKET_NAME stays for `gdk component publish`)
  OUT_DIR/greengrass-build/artifacts/<name>/<version>/<name>.zip
The zip holds the component's edgeloop packages and every edgeloop module they import (found by
reading their imports), under `edgeloop/...`, so PYTHONPATH=<decompressed dir> makes them importable.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

import yaml

from edgeloop.schemas import names
from edgeloop.schemas.use_case import USE_CASES_DIR

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
ROOT_PACKAGE = "edgeloop"

# The packages each component runs (the first one holds its __main__), plus the contracts whole;
# their edgeloop imports are followed from there.
COMPONENT_PACKAGES = {
    names.GATEWAY_COMPONENT: ("edgeloop.greengrass_components.gateway", "edgeloop.schemas"),
    names.MODEL_RUNNER_COMPONENT: ("edgeloop.greengrass_components.model_runner", "edgeloop.schemas"),
}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip bytes


def recipe_path(component: str) -> Path:
    return RECIPES_DIR / f"{component}.yaml"


def load_recipe(component: str) -> dict:
    return yaml.safe_load(recipe_path(component).read_text())


def _module_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin not in (None, "built-in", "frozen") else None


def _package_modules(package: str) -> set[str]:
    init = _module_file(package)
    if init is None or init.name != "__init__.py":
        raise FileNotFoundError(f"package {package} is not importable")
    modules = {package}
    for path in init.parent.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        relative = path.relative_to(init.parent).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        modules.add(".".join([package, *parts]))
    return modules


def _imports_of(module: str, path: Path) -> set[str]:
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m == ROOT_PACKAGE or m.startswith(ROOT_PACKAGE + ".")}


def module_closure(packages: tuple[str, ...]) -> dict[str, Path]:
    """Every edgeloop module the packages need (with their parent packages): module -> file."""
    todo = set().union(*(_package_modules(p) for p in packages))
    files: dict[str, Path] = {}
    while todo:
        module = todo.pop()
        if module in files:
            continue
        path = _module_file(module)
        if path is None:
            continue  # a name imported from a module, not a module itself
        files[module] = path
        parts = module.split(".")
        todo.update(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.update(_imports_of(module, path) - files.keys())
    return files


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


def resolved_recipe_text(component: str, version: str) -> str:
    text = recipe_path(component).read_text()
    return text.replace("COMPONENT_NAME", component).replace("COMPONENT_VERSION", version)


def build_components(out_dir: Path) -> list[Path]:
    """Build every component into out_dir/greengrass-build; returns the recipe and zip paths written."""
    build = Path(out_dir) / "greengrass-build"
    written: list[Path] = []
    for component in COMPONENT_PACKAGES:
        version = load_recipe(component)["ComponentVersion"]
        recipe = build / "recipes" / f"{component}.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(resolved_recipe_text(component, version))
        artifact = write_artifact(component, build / "artifacts" / component / version / f"{component}.zip")
        written += [recipe, artifact]
    return written


if __name__ == "__main__":
    for built in build_components(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()):
        print(built)
