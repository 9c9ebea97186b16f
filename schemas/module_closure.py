"""Which edgeloop modules a deployable unit needs, found by reading import statements (nothing is imported).

One rule for what ships: the Greengrass component zips (greengrass_components/build.py) and the
pipeline's step code archive (sagemaker_pipelines/step_code.py) both take a unit's packages and
follow their imports from there. Stdlib only, and Python 3.9 syntax: it ships in the zips with the
rest of schemas/.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .names import PROJECT as ROOT

# The import root, through the path this module was imported by (in a checkout, edgeloop/ holds a
# link per layout folder; installed, the package directory): edgeloop/schemas/module_closure.py -> edgeloop/
ROOT_DIR = Path(__file__).parents[1]


def is_edgeloop(module: str) -> bool:
    return module == ROOT or module.startswith(ROOT + ".")


def module_file(module: str) -> Path | None:
    """The file of an edgeloop module; not find_spec, which imports every parent package (seconds)."""
    if not is_edgeloop(module):
        return None
    base = ROOT_DIR.joinpath(*module.split(".")[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def package_modules(package: str) -> set[str]:
    """The package and every module under it."""
    init = module_file(package)
    if init is None or init.name != "__init__.py":
        raise FileNotFoundError(f"package {package} is not importable")
    modules = {package}
    for path in init.parent.rglob("*.py"):
        if "__pycache__" not in path.parts:
            parts = [p for p in path.relative_to(init.parent).with_suffix("").parts if p != "__init__"]
            modules.add(".".join([package, *parts]))
    return modules


def imports_of(module: str, path: Path) -> set[str]:
    """Absolute names of everything `module` imports (a `from a import b` counts as a and a.b)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                parts = module.split(".")
                base = parts[: len(parts) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def edgeloop_modules(packages: tuple[str, ...]) -> tuple[dict[str, Path], set[str]]:
    """(every edgeloop module the packages need, with their parent packages -> its file,
    the top-level names of everything else they import, the standard library included)."""
    todo = set().union(*(package_modules(p) for p in packages))
    files: dict[str, Path] = {}
    external: set[str] = set()
    while todo:
        module = todo.pop()
        path = None if module in files else module_file(module)
        if path is None:
            continue  # seen already, or a name imported from a module rather than a module
        files[module] = path
        parts = module.split(".")
        todo.update(".".join(parts[:i]) for i in range(1, len(parts)))
        for name in imports_of(module, path):
            if is_edgeloop(name):
                todo.add(name)
            elif name:
                external.add(name.split(".")[0])
    return files, external - {"__future__"}
