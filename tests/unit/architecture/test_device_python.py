"""The code the Greengrass component zips hold runs on the gateways' Python: 3.9 and newer.

Debian 11 ships Python 3.9, Ubuntu 22.04 3.10 (the cloud side stays 3.11+). vermin checks the zipped
files statically against a 3.9 target, so no 3.9 interpreter is needed here. Its flags, and why
they model what runs on a gateway:

- `--feature union-types`: `X | Y` evaluated at run time (a type alias, `isinstance(v, A | B)`,
  `TypeAdapter(A | None)`) raises TypeError before Python 3.10.
- no `--eval-annotations`: every zipped module with annotations starts with
  `from __future__ import annotations` (checked below), so its annotations stay strings. The one
  reader that evaluates them is pydantic, for model fields, and on 3.9 it evaluates `X | Y` through
  the `eval_type_backport` package, which the recipes install. So a union found on an annotation
  line is fine; every other finding counts (stdlib names such as `datetime.UTC` or `enum.StrEnum`
  -- use `edgeloop.schemas.compat` --, `match`, `zip(strict=...)`, `dataclass(slots=...)`, ...).
- `# novermin` on a line vermin misreads (`os.O_WRONLY | os.O_CREAT` is not a union).
"""

from __future__ import annotations

import ast
import datetime
import enum
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeloop.greengrass_components import build
from edgeloop.schemas import compat

REPOSITORY = Path(__file__).resolve().parents[3]
TARGET = "3.9"
_VERMIN = "import sys; from vermin import main; sys.exit(main())"
_UNION = "union types as `X | Y`"


def _zip_python_files() -> list[Path]:
    """Every .py file of every component zip, as build.py assembles them (real paths, each once)."""
    files: set[Path] = set()
    for component, packages in build.COMPONENT_PACKAGES.items():
        entries = getattr(build, "artifact_entries", None)
        sources = entries(component).values() if entries else build.module_closure(packages).values()
        files.update(Path(p).resolve() for p in sources if Path(p).suffix == ".py")
    return sorted(files)


def _where(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPOSITORY)) if path.is_relative_to(REPOSITORY) else str(path)


def _annotation_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            annotations = [node.annotation]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations = [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        else:
            continue
        for annotation in filter(None, annotations):
            lines.update(range(annotation.lineno, annotation.end_lineno + 1))
    return lines


def _postpones_annotations(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )


def vermin_findings(files: list[Path]) -> list[str]:
    """`file:line: feature requires 3.x` for everything in `files` that Python 3.9 cannot run."""
    # vermin takes `--format parsable`, not `--format=parsable` (it ignores the latter silently)
    args = ["--no-config-file", f"--target={TARGET}-", "--violations", "--format", "parsable", "--no-tips"]
    args += ["--feature", "union-types", "--no-eval-annotations", *map(str, files)]
    result = subprocess.run([sys.executable, "-c", _VERMIN, *args], capture_output=True, text=True, timeout=300)
    if result.returncode not in (0, 1) or "Traceback" in result.stderr:
        raise RuntimeError(f"vermin failed ({result.returncode}): {result.stderr}")
    trees = {path.resolve(): ast.parse(path.read_text(), filename=str(path)) for path in files}
    annotation_lines = {path: _annotation_lines(tree) for path, tree in trees.items()}
    findings = []
    for row in result.stdout.splitlines():
        path, line, _column, _py2, py3, feature = row.split(":", 5)
        if not path or not line:
            continue  # a file's or the run's summary
        path = Path(path).resolve()
        in_annotation = int(line) in annotation_lines.get(path, set())
        if feature.startswith(_UNION) and in_annotation and _postpones_annotations(trees[path]):
            continue
        findings.append(f"{_where(path)}:{line}: {feature.strip()} requires Python {py3}")
    return findings


def test_the_zips_hold_the_device_code():
    files = {_where(p) for p in _zip_python_files()}
    assert "greengrass_components/gateway/component.py" in files
    assert "greengrass_components/model_runner/agent.py" in files
    assert "model_runtime/scorer.py" in files
    assert "schemas/compat.py" in files
    assert "greengrass_components/build.py" not in files  # the build itself runs in the cloud tooling


def test_zipped_modules_keep_their_annotations_unevaluated():
    missing = []
    for path in _zip_python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        if _annotation_lines(tree) and not _postpones_annotations(tree):
            missing.append(_where(path))
    assert missing == [], f"add `from __future__ import annotations` (Python 3.9 evaluates annotations): {missing}"


def test_zipped_code_runs_on_python_39():
    findings = vermin_findings(_zip_python_files())
    assert findings == [], "the gateways run Python 3.9+:\n" + "\n".join(findings)


def test_the_check_tells_runtime_unions_from_annotations(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from __future__ import annotations\n"
        "from datetime import UTC\n"  # 2
        "MaybeInt = int | None\n"  # 3
        "def f(x: int | None, ys: list[str] | None = None) -> dict[str, int] | None:\n"  # 4: fine
        "    return {s: n for s, n in zip(ys, [x], strict=True)}\n"  # 5
        "class Point:\n"
        "    x: float | None = None\n"  # 7: fine
    )
    lines = sorted(int(finding.split(":")[1]) for finding in vermin_findings([sample]))
    assert lines == [2, 3, 5]


def test_the_compat_names_are_the_standard_ones_on_311():
    """On the cloud's Python nothing changes: the same objects as datetime.UTC and enum.StrEnum."""
    assert compat.UTC is datetime.UTC
    assert compat.StrEnum is enum.StrEnum


def test_the_39_str_enum_behaves_like_the_standard_one(monkeypatch):
    monkeypatch.delattr(enum, "StrEnum", raising=False)  # what Python 3.9 and 3.10 lack
    spec = importlib.util.spec_from_file_location("compat_without_str_enum", compat.__file__)
    fallback = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fallback)
    assert fallback.StrEnum is not getattr(enum, "StrEnum", None)

    class Colour(fallback.StrEnum):
        RED = "red"
        DARK_BLUE = enum.auto()

    assert isinstance(Colour.RED, str) and Colour.RED == "red" and Colour("red") is Colour.RED
    assert (str(Colour.RED), f"{Colour.RED}", Colour.DARK_BLUE.value) == ("red", "red", "dark_blue")
    assert json.dumps({"c": Colour.RED}) == '{"c": "red"}'
    with pytest.raises(ValueError):
        Colour("green")
