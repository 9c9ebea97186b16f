"""Modules and functions stay small enough to read in one sitting.

At most MAX_FILE_LINES lines per source file and MAX_FUNCTION_LINES per function (decorators
and docstring included). CDK construct constructors are exempt: they declare resources, one
statement each, and splitting them scatters what a reader compares against the template.
"""

from __future__ import annotations

import ast
from pathlib import Path

from import_rules import ALLOWED, source_files

REPOSITORY = Path(__file__).resolve().parents[3]
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60
OTHER_SOURCE_FOLDERS = ("benchmarks",)


def _sources() -> list[Path]:
    extra = [p for folder in OTHER_SOURCE_FOLDERS for p in sorted((REPOSITORY / folder).rglob("*.py"))]
    return [*source_files(REPOSITORY), *extra]


def _is_construct_constructor(path: Path, function: ast.FunctionDef, parents: dict[ast.AST, ast.AST]) -> bool:
    return (
        path.relative_to(REPOSITORY).parts[0] == "cdk"
        and function.name == "__init__"
        and isinstance(parents.get(function), ast.ClassDef)
    )


def test_no_source_file_is_too_long():
    long_files = {}
    for path in _sources():
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES:
            long_files[str(path.relative_to(REPOSITORY))] = lines
    assert long_files == {}


def test_no_function_is_too_long():
    long_functions = {}
    for path in _sources():
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - first + 1
            if length > MAX_FUNCTION_LINES and not _is_construct_constructor(path, node, parents):
                long_functions[f"{path.relative_to(REPOSITORY)}:{node.lineno} {node.name}"] = length
    assert long_functions == {}


def test_the_size_rules_read_every_layer():
    read = {path.relative_to(REPOSITORY).parts[0] for path in _sources()}
    assert read >= set(ALLOWED) | set(OTHER_SOURCE_FOLDERS)
