"""Dependencies run one way (import_rules.py): the tree obeys, and the check catches what it must."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from import_rules import ALLOWED, violations

REPOSITORY = Path(__file__).resolve().parents[3]


def test_the_tree_follows_the_dependency_rules():
    assert violations(REPOSITORY) == []


def test_every_layer_folder_is_linked_under_the_import_root():
    root_links = {p.name for p in (REPOSITORY / "edgeloop").iterdir() if p.is_symlink()}
    assert root_links == set(ALLOWED) - {"edgeloop"}
    for name in root_links:
        assert (REPOSITORY / "edgeloop" / name).resolve() == REPOSITORY / name


# --- the check itself, on small trees built for the purpose ----------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    """A checkout with the given modules; every layer folder exists, so only `files` can break a rule."""
    for layer in ALLOWED:
        (tmp_path / layer).mkdir(exist_ok=True)
        (tmp_path / layer / "__init__.py").touch()
    for relative, source in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:
            if parent != Path("."):
                (tmp_path / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
    return tmp_path


def test_a_tree_that_follows_the_rules_passes(tmp_path):
    root = _tree(
        tmp_path,
        {
            "schemas/names.py": "X = 1\n",
            "model_runtime/scorer.py": "from edgeloop.schemas import names\n",
            "cloud/s3.py": "from edgeloop.schemas.names import X\n",
            "functions/ingest/handler.py": "from edgeloop.cloud import s3\nfrom .logic import f\n",
            "functions/ingest/logic.py": "def f(): ...\n",
            "greengrass_components/gateway/main.py": "from edgeloop.model_runtime.scorer import names\n",
            "edgeloop/cli/main.py": "from edgeloop.functions.ingest import handler\n",
        },
    )
    assert violations(root) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"greengrass_components/gateway/main.py": "from edgeloop.functions.ingest.logic import f\n"},
            "greengrass_components/gateway/main.py:1: greengrass_components/ may not import edgeloop.functions",
        ),
        (
            {"greengrass_components/gateway/main.py": "def run():\n    from edgeloop.cloud import aws\n"},
            "greengrass_components/gateway/main.py:2: greengrass_components/ may not import edgeloop.cloud.aws",
        ),
        (
            {"model_runtime/features.py": "import edgeloop.cloud.s3\n"},
            "model_runtime/features.py:1: model_runtime/ may not import edgeloop.cloud.s3",
        ),
        (
            {"schemas/model.py": "from edgeloop.model_runtime import scorer\n"},
            "schemas/model.py:1: schemas/ may not import edgeloop.model_runtime.scorer",
        ),
        (
            {"cloud/fleet/waves.py": "from edgeloop.functions.orchestrator.logic import plan\n"},
            "cloud/fleet/waves.py:1: cloud/ may not import edgeloop.functions.orchestrator.logic.plan",
        ),
        (
            {
                "functions/status_intake/logic.py": "from edgeloop.functions.device_registry.logic import f\n",
                "functions/device_registry/logic.py": "def f(): ...\n",
            },
            "Lambda folder edgeloop.functions.status_intake imports another one: edgeloop.functions.device_registry",
        ),
        (
            {"cloud/fleet/delivery.py": "from edgeloop.local.mqtt import connect\n"},
            "cloud/fleet/delivery.py:1: cloud/ may not import edgeloop.local.mqtt.connect (edgeloop/)",
        ),
        (
            {
                "cloud/packing/a.py": "from edgeloop.cloud.datalake.b import x\n",
                "cloud/datalake/b.py": "from edgeloop.cloud.packing import a\nx = 1\n",
            },
            "import cycle between packages edgeloop.cloud.datalake, edgeloop.cloud.packing",
        ),
        (
            {
                "sagemaker_pipelines/steps/evaluate.py": "from .register import load\n",
                "sagemaker_pipelines/steps/register.py": "def main():\n    from .evaluate import gate\n",
            },
            "import cycle between modules edgeloop.sagemaker_pipelines.steps.evaluate, "
            "edgeloop.sagemaker_pipelines.steps.register",
        ),
    ],
    ids=[
        "device-imports-a-lambda",
        "device-imports-cloud-inside-a-function",
        "shared-runtime-imports-cloud",
        "contracts-import-code",
        "cloud-imports-a-lambda",
        "lambda-imports-another-lambda",
        "cloud-imports-the-local-runtime",
        "package-cycle",
        "module-cycle-hidden-in-a-function",
    ],
)
def test_a_forbidden_import_is_reported(tmp_path, files, expected):
    found = violations(_tree(tmp_path, files))
    assert any(expected in line for line in found), found
