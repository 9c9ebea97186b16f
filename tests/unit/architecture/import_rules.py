"""The project's dependency rules, checked on the source text (AST): no module is imported.

Every folder under the import root is a layer; a layer may import only the layers listed for it
in ALLOWED. Inside a layer each subpackage is a unit of its own (`functions/ingest`,
`cloud/fleet`, `edgeloop/local`, ...); units must not import each other in a cycle, and a
Lambda folder (`functions/<name>`) never imports another one. Every import counts, wherever it
stands: one inside a function hides a dependency from a reader, not from this check.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT_PACKAGE = "edgeloop"
# layer -> the layers its modules may import (besides itself). `edgeloop` is the folder itself:
# the CLI, the demo, the embedded local runtime and the query layer.
ALLOWED: dict[str, frozenset[str]] = {
    "schemas": frozenset(),
    "model_runtime": frozenset({"schemas"}),
    "greengrass_components": frozenset({"schemas", "model_runtime"}),
    "device_shims": frozenset({"schemas", "model_runtime", "greengrass_components"}),
    "cloud": frozenset({"schemas", "model_runtime"}),
    "functions": frozenset({"schemas", "model_runtime", "cloud"}),
    "sagemaker_pipelines": frozenset({"schemas", "model_runtime", "cloud"}),
    # cdk builds the Greengrass components' artifacts and recipes it publishes (greengrass_components.build).
    "cdk": frozenset({"schemas", "sagemaker_pipelines", "greengrass_components", "edgeloop.query"}),
    "edgeloop": frozenset(
        {
            "schemas",
            "model_runtime",
            "greengrass_components",
            "device_shims",
            "cloud",
            "functions",
            "sagemaker_pipelines",
        }
    ),
}
# Units of `edgeloop` other layers may import: the query layer's table definitions feed the CDK
# Glue tables (one definition for both).
EXPORTED_FROM_CLI = frozenset({"edgeloop.query"})


@dataclass(frozen=True)
class Import:
    source: str  # module that imports, e.g. "edgeloop.functions.ingest.logic"
    target: str  # module or name imported, e.g. "edgeloop.cloud.s3"
    path: Path
    line: int

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}"


def module_name(root: Path, path: Path) -> str:
    """`root/<folder>/a/b.py` -> `edgeloop.<folder>.a.b`; `root/edgeloop/x.py` -> `edgeloop.x`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts and parts[0] == ROOT_PACKAGE:
        parts.pop(0)
    return ".".join([ROOT_PACKAGE, *parts])


def source_files(root: Path) -> Iterator[Path]:
    """The project's modules, each once: layer folders directly, not through edgeloop/'s links."""
    for layer in ALLOWED:
        for path in sorted((root / layer).rglob("*.py")):
            linked = any(parent.is_symlink() for parent in path.relative_to(root).parents if parent != Path("."))
            if "__pycache__" not in path.parts and not linked:
                yield path


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    module = module_name(root, path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from pkg import x`: x may be a module (a unit of its own) or a name in pkg
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == ROOT_PACKAGE or target.startswith(ROOT_PACKAGE + "."):
                yield Import(module, target, path, node.lineno)


def layer_of(module: str) -> str:
    """`edgeloop.cloud.fleet.waves` -> `cloud`; `edgeloop.cli` and `edgeloop.local.x` -> `edgeloop`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED and parts[1] != ROOT_PACKAGE else ROOT_PACKAGE


def unit_of(module: str, root: Path) -> str:
    """The subpackage a module belongs to (`edgeloop.functions.ingest`, `edgeloop.cloud.fleet`); a
    module directly in a layer folder belongs to the layer's own unit (`edgeloop.cloud`)."""
    parts = module.split(".")
    layer = layer_of(module)
    depth = 1 if layer == ROOT_PACKAGE else 2  # edgeloop.<unit> vs edgeloop.<layer>.<unit>
    folder = root / layer if layer != ROOT_PACKAGE else root / ROOT_PACKAGE
    if len(parts) > depth:
        candidate = folder / parts[depth]
        if candidate.is_dir() and not candidate.is_symlink():
            return ".".join(parts[: depth + 1])
    return ".".join(parts[:depth])


def violations(root: Path) -> list[str]:
    """Every broken rule under `root` (a checkout), as `path:line: message` lines."""
    root = Path(root)
    files = list(source_files(root))
    modules = {module_name(root, path) for path in files}
    found: list[str] = []
    units: dict[str, dict[str, Import]] = defaultdict(dict)
    module_graph: dict[str, dict[str, Import]] = defaultdict(dict)
    for path in files:
        for imported in imports_of(root, path):
            found += _layer_violations(imported, root)
            source, target = unit_of(imported.source, root), unit_of(imported.target, root)
            if source != target:
                units[source].setdefault(target, imported)
            target_module = _module_of(imported.target, modules)
            if target_module not in (None, imported.source):
                module_graph[imported.source].setdefault(target_module, imported)
    found += [f"import cycle between packages {cycle}" for cycle in _cycles(units, root)]
    found += [f"import cycle between modules {cycle}" for cycle in _cycles(module_graph, root)]
    return found


def _module_of(name: str, modules: set[str]) -> str | None:
    """The module a dotted name lives in: `edgeloop.cloud.s3.get_bytes` -> `edgeloop.cloud.s3`."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _layer_violations(imported: Import, root: Path) -> list[str]:
    source_layer, target_layer = layer_of(imported.source), layer_of(imported.target)
    target_unit = unit_of(imported.target, root)
    where = imported.where(root)
    if source_layer == "functions" and target_layer == "functions":
        if unit_of(imported.source, root) != target_unit:
            return [f"{where}: Lambda folder {unit_of(imported.source, root)} imports another one: {imported.target}"]
        return []
    if source_layer == target_layer:
        return []
    allowed = ALLOWED[source_layer]
    if target_layer in allowed or (target_layer == ROOT_PACKAGE and target_unit in allowed & EXPORTED_FROM_CLI):
        return []
    return [f"{where}: {source_layer}/ may not import {imported.target} ({target_layer}/)"]


def _cycles(graph: dict[str, dict[str, Import]], root: Path) -> list[str]:
    """One line per strongly connected set of units (Tarjan), naming an import on each edge."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        on_stack.add(unit)
        for target in graph.get(unit, {}):
            if target not in index:
                visit(target)
                low[unit] = min(low[unit], low[target])
            elif target in on_stack:
                low[unit] = min(low[unit], index[target])
        if low[unit] == index[unit]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == unit:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    lines = []
    for component in components:
        members = set(component)
        edges = [
            f"{source} -> {target} ({imported.where(root)})"
            for source in component
            for target, imported in sorted(graph[source].items())
            if target in members
        ]
        lines.append(f"{', '.join(component)}: {'; '.join(edges)}")
    return lines
